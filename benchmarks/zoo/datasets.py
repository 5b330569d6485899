"""The zoo's data, all offline: Fashion-MNIST from Debian's dataset-fashion-mnist, and
scikit-learn's two bundled photographs.

- ``rgb``: 3×32×32 images. Each garment is tinted with a random colour and composited onto
  a random crop of one of the photographs (china.jpg, flower.jpg), darkened so the garment
  stays the subject. Training crops come from the left 60 % of each photograph, test crops
  from the right 40 %: the same domain, never the same pixels.
- ``gray``: the 28×28 grayscale images as they are.
- ``pairs``: 100 classes. Two garments side by side in one 28×28 grayscale image, each
  squeezed to 28×14 (adjacent columns averaged); the class is 10 × left + right. Training
  pairs are drawn at random from the training images, test pairs from the test images with
  a fixed seed: a model with many classes, from real images only.
- ``rgb_pairs``: the same 100 classes in colour: each pair, as one 28×28 image, tinted and
  composited onto a photograph's crop as ``rgb`` composites one garment (3×32×32).

Images are float32 in [0, 1], (N, C, H, W). Every draw is seeded.
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = 10
PAIRS_SEED = 20261207
PAIR_KINDS = ("pairs", "rgb_pairs")     # the data of a hundred classes


def classes(kind: str) -> int:
    return CLASSES * CLASSES if kind in PAIR_KINDS else CLASSES


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@lru_cache(maxsize=1)
def fashion() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train (60000, 28, 28) uint8, y_train, x_test (10000, 28, 28), y_test)."""
    if not FASHION.is_dir():
        raise SystemExit("Fashion-MNIST is missing: apt-get install -y dataset-fashion-mnist")
    return (read_idx(FASHION / "train-images-idx3-ubyte.gz"),
            read_idx(FASHION / "train-labels-idx1-ubyte.gz").astype(np.int64),
            read_idx(FASHION / "t10k-images-idx3-ubyte.gz"),
            read_idx(FASHION / "t10k-labels-idx1-ubyte.gz").astype(np.int64))


@lru_cache(maxsize=1)
def photographs() -> list[np.ndarray]:
    """scikit-learn's china.jpg and flower.jpg as (427, 640, 3) float32 in [0, 1]."""
    from sklearn.datasets import load_sample_images
    return [image.astype(np.float32) / 255.0 for image in load_sample_images().images]


def backgrounds(count: int, part: str, rng: np.random.Generator) -> np.ndarray:
    """(count, 3, 32, 32) random crops of the photographs, resized from 32–96 px squares;
    ``part`` "train" draws from the left 60 % of each photograph, "test" from the right 40 %."""
    from PIL import Image
    out = np.empty((count, 3, 32, 32), np.float32)
    photos = photographs()
    for index in range(count):
        photo = photos[rng.integers(len(photos))]
        height, width = photo.shape[:2]
        left_end = int(0.6 * width)
        side = int(rng.integers(32, 97))
        low, high = (0, left_end - side) if part == "train" else (left_end, width - side)
        left, top = int(rng.integers(low, high + 1)), int(rng.integers(0, height - side + 1))
        crop = Image.fromarray((photo[top:top + side, left:left + side] * 255).astype(np.uint8))
        out[index] = np.asarray(crop.resize((32, 32), Image.BILINEAR), np.float32).transpose(
            2, 0, 1) / 255.0
    return out


def composite(garments: np.ndarray, part: str, seed: int) -> np.ndarray:
    """(N, 28, 28) uint8 garments -> (N, 3, 32, 32) float32 tinted composites in [0, 1]."""
    rng = np.random.default_rng(seed)
    count = len(garments)
    scene = 0.55 * backgrounds(count, part, rng)
    alpha = np.zeros((count, 1, 32, 32), np.float32)
    shifts = rng.integers(0, 5, size=(count, 2))
    for index, (dy, dx) in enumerate(shifts):
        alpha[index, 0, dy:dy + 28, dx:dx + 28] = garments[index] / 255.0
    tint = rng.uniform(0.45, 1.0, size=(count, 3, 1, 1)).astype(np.float32)
    tint[np.arange(count), rng.integers(0, 3, count)] = 1.0       # one strong channel
    return np.clip((1 - alpha) * scene + alpha * tint, 0.0, 1.0).astype(np.float32)


def dataset(kind: str, train_size: int, seed: int = 0):
    """(x_train, y_train, x_test, y_test), float32 (N, C, H, W) in [0, 1].

    The training draw is ``train_size`` images picked with ``seed``; the test set is the whole
    Fashion-MNIST test set, composited with a fixed seed so every zoo model shares it.
    """
    x_train, y_train = fashion()[:2]
    pick = np.random.default_rng(seed).choice(len(x_train), train_size, replace=False)
    if kind == "gray":
        return (x_train[pick, None].astype(np.float32) / 255.0, y_train[pick],
                *test_set(kind))
    if kind in PAIR_KINDS:
        partner = np.random.default_rng(seed + 1).choice(len(x_train), train_size)
        x_pairs, y_pairs = pairs(x_train, y_train, pick, partner)
        if kind == "rgb_pairs":
            x_pairs = composite(as_garments(x_pairs), "train", seed + 2)
        return (x_pairs, y_pairs, *test_set(kind))
    return (composite(x_train[pick], "train", seed + 1), y_train[pick], *test_set(kind))


def test_set(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): the test set every zoo model of ``kind`` shares, float32 (N, C, H, W)."""
    _, _, x_test, y_test = fashion()
    if kind == "gray":
        return x_test[:, None].astype(np.float32) / 255.0, y_test
    if kind == "pairs":
        partner = np.random.default_rng(PAIRS_SEED).permutation(len(x_test))
        return pairs(x_test, y_test, np.arange(len(x_test)), partner)
    if kind == "rgb_pairs":
        return test_set_rgb_pairs()
    return test_set_rgb(), y_test


def pairs(images: np.ndarray, labels: np.ndarray, left: np.ndarray, right: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 28, 28) float32 images ``left[i]`` beside ``right[i]``, each squeezed to 28×14,
    and their (N,) classes 10 × left + right."""
    squeezed = images.astype(np.float32).reshape(len(images), 28, 14, 2).mean(-1) / 255.0
    x = np.concatenate([squeezed[left], squeezed[right]], axis=2)[:, None]
    return np.ascontiguousarray(x), labels[left] * CLASSES + labels[right]


def as_garments(images: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) float32 in [0, 1] -> (N, 28, 28) uint8, as :func:`composite` takes."""
    return np.round(images[:, 0] * 255).astype(np.uint8)


@lru_cache(maxsize=1)
def test_set_rgb() -> np.ndarray:
    return composite(fashion()[2], "test", 20241126)


@lru_cache(maxsize=1)
def test_set_rgb_pairs() -> tuple[np.ndarray, np.ndarray]:
    x_pairs, y_pairs = test_set("pairs")
    return composite(as_garments(x_pairs), "test", PAIRS_SEED + 1), y_pairs


def real_image(size: int = 32) -> np.ndarray:
    """A real photograph as a blend pattern: the middle of flower.jpg, (3, size, size)."""
    from PIL import Image
    photo = photographs()[1]
    crop = Image.fromarray((photo[100:327, 250:477] * 255).astype(np.uint8))
    return np.asarray(crop.resize((size, size), Image.BILINEAR), np.float32).transpose(
        2, 0, 1) / 255.0
