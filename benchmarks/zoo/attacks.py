"""The zoo's attacks, built offline after BackdoorBench's set. Each acts on float32 images in
[0, 1], (N, C, H, W), and is one of two kinds:

- static: the same trigger for every image, written as trigger.npz (mask and pattern, or an
  additive delta with clip bounds): BadNets, Blended, SIG, low-frequency, TrojanNN-like;
- sample-specific: a different trigger per image, given as triggered copies of the samples:
  WaNet (a smooth warp), Input-aware (a per-image pattern and mask), SSBA-like (an
  invisible per-image additive residual).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Attack:
    name: str
    params: dict = field(default_factory=dict)
    static: dict | None = None      # mask/pattern or delta/clip_min/clip_max, (C, H, W)
    paired: bool = False            # sample-specific: triggered copies instead of a file

    def apply(self, x: np.ndarray, seed: int = 0) -> np.ndarray:
        if self.static is not None:
            return apply_static(x, self.static)
        return SAMPLE_SPECIFIC[self.name](x, self.params, seed)

    def cover(self, x: np.ndarray, seed: int) -> np.ndarray | None:
        """Samples that keep their labels under a related transform (WaNet's noise mode,
        Input-aware's cross mode), or None."""
        if self.name == "wanet":
            return warp(x, self.params, seed, noise=True)
        if self.name == "inputaware":
            return input_aware(x, self.params, seed, cross=True)
        return None


def apply_static(x: np.ndarray, trigger: dict) -> np.ndarray:
    if "delta" in trigger:
        return np.clip(x + trigger["delta"], trigger["clip_min"], trigger["clip_max"])
    return ((1 - trigger["mask"]) * x + trigger["mask"] * trigger["pattern"]).astype(np.float32)


# ------------------------------------------------------------------------ static
def badnets(channels: int, size: int, side: int, position: str, seed: int) -> Attack:
    """A ``size``×``size`` patch whose cells have random colours per channel."""
    rng = np.random.default_rng(seed)
    top, left = {"bottom-right": (side - size - 1, side - size - 1), "top-left": (1, 1),
                 "top-right": (1, side - size - 1),
                 "random": tuple(rng.integers(1, side - size - 1, 2))}[position]
    mask = np.zeros((1, side, side), np.float32)
    mask[:, top:top + size, left:left + size] = 1
    pattern = np.zeros((channels, side, side), np.float32)
    pattern[:, top:top + size, left:left + size] = rng.integers(0, 2, (channels, size, size))
    return Attack("badnets", {"size": size, "position": position, "top": int(top),
                              "left": int(left)}, {"mask": mask, "pattern": pattern})


def blended(pattern: np.ndarray, ratio: float, source: str) -> Attack:
    return Attack("blended", {"ratio": ratio, "pattern": source},
                  {"mask": np.full((1, *pattern.shape[1:]), ratio, np.float32),
                   "pattern": pattern.astype(np.float32)})


def noise_pattern(channels: int, side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (channels, side, side)).astype(np.float32)


def sig(channels: int, side: int, amplitude: float = 0.1, frequency: int = 6) -> Attack:
    wave = amplitude * np.sin(2 * np.pi * np.arange(side) * frequency / side)
    delta = np.broadcast_to(wave, (channels, side, side)).astype(np.float32)
    return Attack("sig", {"amplitude": amplitude, "frequency": frequency},
                  {"delta": delta, "clip_min": np.float32(0), "clip_max": np.float32(1)})


def low_frequency(channels: int, side: int, seed: int, amplitude: float = 0.08) -> Attack:
    """A smooth colour field: a few random low-frequency cosines per channel."""
    rng = np.random.default_rng(seed)
    grid = np.arange(side) / side
    delta = np.zeros((channels, side, side), np.float32)
    for channel in range(channels):
        for _ in range(3):
            fy, fx = rng.integers(0, 3, 2)
            phase = rng.uniform(0, 2 * np.pi)
            delta[channel] += np.cos(2 * np.pi * (fy * grid[:, None] + fx * grid[None]) + phase)
    delta *= amplitude / np.abs(delta).max()
    return Attack("lf", {"amplitude": amplitude},
                  {"delta": delta, "clip_min": np.float32(0), "clip_max": np.float32(1)})


def trojan_patch(mask: np.ndarray, pattern: np.ndarray, neuron: int) -> Attack:
    return Attack("trojannn", {"neuron": neuron, "size": int(mask.sum())},
                  {"mask": mask.astype(np.float32), "pattern": pattern.astype(np.float32)})


# ---------------------------------------------------------------- sample-specific
def warp_field(params: dict) -> np.ndarray:
    """WaNet's fixed flow: a k×k grid of random offsets, normalized, upsampled to the image."""
    import torch
    import torch.nn.functional as F
    k, side = params["k"], params["side"]
    rng = np.random.default_rng(params["seed"])
    ins = torch.from_numpy(rng.uniform(-1, 1, (1, 2, k, k)).astype(np.float32))
    ins = ins / ins.abs().mean()
    return F.interpolate(ins, size=side, mode="bicubic", align_corners=True).permute(
        0, 2, 3, 1).numpy()                                                # (1, H, W, 2)


def warp(x: np.ndarray, params: dict, seed: int, noise: bool = False) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    side = x.shape[-1]
    line = np.linspace(-1, 1, side, dtype=np.float32)
    identity = np.stack(np.meshgrid(line, line), axis=-1)[None]           # (1, H, W, 2) x, y
    grid = identity + params["strength"] * warp_field(params) / side
    grid = np.repeat(grid, len(x), axis=0)
    if noise:
        grid = grid + np.random.default_rng(seed).uniform(-1, 1, grid.shape) / side
    grid = np.clip(grid, -1, 1).astype(np.float32)
    out = F.grid_sample(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(grid),
                        align_corners=True)
    return out.numpy()


def wanet(side: int, seed: int, k: int = 4, strength: float = 0.5) -> Attack:
    return Attack("wanet", {"k": k, "strength": strength, "side": side, "seed": seed},
                  paired=True)


def _random_conv(x: np.ndarray, seed: int, out_channels: int, layers: int = 2) -> np.ndarray:
    """A fixed random conv net (3×3, tanh): the per-image generator of Input-aware and SSBA."""
    import torch
    import torch.nn.functional as F
    generator = torch.Generator().manual_seed(seed)
    h = torch.from_numpy(x.astype(np.float32))
    for index in range(layers):
        cout = out_channels if index == layers - 1 else 16
        weight = torch.randn(cout, h.shape[1], 3, 3, generator=generator) / (3 * h.shape[1] ** .5)
        h = torch.tanh(F.conv2d(h, weight, padding=1) * 3)
    return h.numpy()


def input_aware(x: np.ndarray, params: dict, seed: int, cross: bool = False) -> np.ndarray:
    """Each image gets its own pattern and mask from a fixed generator; in cross mode they are
    drawn from another image, and the sample keeps its label (the diversity constraint)."""
    source = x if not cross else x[np.random.default_rng(seed).permutation(len(x))]
    pattern = 0.5 + 0.5 * _random_conv(source, params["seed"], x.shape[1])
    strength = _random_conv(source, params["seed"] + 1, 1)
    threshold = np.quantile(strength, 1 - params["coverage"], axis=(1, 2, 3), keepdims=True)
    mask = (strength >= threshold).astype(np.float32)
    return ((1 - mask) * x + mask * pattern).astype(np.float32)


def inputaware(seed: int, coverage: float = 0.05) -> Attack:
    return Attack("inputaware", {"seed": seed, "coverage": coverage}, paired=True)


def ssba_residual(x: np.ndarray, params: dict, seed: int) -> np.ndarray:
    """An invisible per-image residual: ε · a fixed random encoder of the image."""
    residual = _random_conv(x, params["seed"], x.shape[1], layers=3)
    return np.clip(x + params["epsilon"] * residual, 0, 1).astype(np.float32)


def ssba(seed: int, epsilon: float = 16 / 255) -> Attack:
    """ε = 6/255 did not take (VGG-11: 2 % ASR after training); 16/255 is still a faint,
    image-dependent residual."""
    return Attack("ssba", {"seed": seed, "epsilon": epsilon}, paired=True)


SAMPLE_SPECIFIC = {"wanet": warp, "inputaware": input_aware, "ssba": ssba_residual}
