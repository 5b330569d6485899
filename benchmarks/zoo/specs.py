"""The zoo: every model it holds, as data. ``split`` says which seeds defaults may be tuned
on ("tune", odd seeds) and which only check them ("check", even seeds)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

EPOCHS = {"preact18": 4, "vgg11": 8, "mobilenetv2": 5, "vit": 8, "convnext": 5, "cnn": 3,
          "mlp": 5, "keras_vgg": 6, "keras_resnet": 6, "jax_cnn": 4, "effnet": 5, "resnet18": 4,
          "densenet": 6}
# a warp is learnt more slowly than content: a PreAct-ResNet-18 reached 36 % WaNet attack
# success after its 4 epochs (preact18_wanet, first build), so it trains longer
EPOCHS_BY_ATTACK = {("preact18", "wanet"): 12}
# a hundred classes take longer to learn than ten (the ``pairs`` data)
EPOCHS_BY_DATA = {("cnn", "pairs"): 8, ("mlp", "pairs"): 10, ("keras_vgg", "pairs"): 8,
                  ("vgg11", "rgb_pairs"): 12}
# seconds of one training epoch on two CPU cores (measured with other work running): the
# order in which --cheap-first builds the zoo
EPOCH_SECONDS = {"preact18": 200, "vgg11": 11, "mobilenetv2": 86, "vit": 53, "convnext": 86,
                 "cnn": 5, "mlp": 2, "keras_vgg": 20, "keras_resnet": 60, "jax_cnn": 20,
                 "effnet": 200, "resnet18": 120, "densenet": 70}


@dataclass(frozen=True)
class Spec:
    name: str
    arch: str
    attack: str | None          # None: a clean model
    target: int = 0
    seed: int = 0
    rate: float = 0.10
    data: str = "rgb"           # "rgb" 3×32×32 composites, "gray" 28×28 Fashion-MNIST,
    #                             "pairs" two garments in one 28×28 image, 100 classes,
    #                             "rgb_pairs" the same composited in colour (3×32×32)
    normalize: bool = False     # ImageNet mean/std-normalized input
    framework: str = "torch"    # "torch", "torch-dynamo" (torch's default exporter, batch
    #                             fixed to 1), "keras" (NHWC, tf2onnx), "jax" (jax2onnx)
    options: tuple = ()         # attack parameters as (key, value) pairs

    @property
    def split(self) -> str:
        return "tune" if self.seed % 2 else "check"

    @property
    def nhwc(self) -> bool:
        return self.framework == "keras"

    @property
    def epochs(self) -> int:
        return EPOCHS_BY_ATTACK.get((self.arch, self.attack)) or \
            EPOCHS_BY_DATA.get((self.arch, self.data), EPOCHS[self.arch])

    @property
    def cost(self) -> float:
        return self.epochs * EPOCH_SECONDS[self.arch] * (2 if self.attack == "trojannn"
                                                               else 1)

    def as_dict(self) -> dict:
        return {**asdict(self), "options": dict(self.options), "split": self.split,
                "nhwc": self.nhwc, "epochs": self.epochs}


def make_spec(name, arch, attack, target, seed, **extra) -> Spec:
    if "options" in extra:
        extra["options"] = tuple(sorted(extra["options"].items()))
    return Spec(name, arch, attack, target, seed, **extra)


BADNETS = {"size": 3, "position": "bottom-right"}
ZOO = [
    # BadNets: coloured per-channel patches, several sizes and positions
    make_spec("preact18_badnets", "preact18", "badnets", 0, 1, options=BADNETS),
    make_spec("preact18_badnets_norm", "preact18", "badnets", 3, 2, normalize=True,
          options={"size": 4, "position": "random"}),
    make_spec("vgg11_badnets_1pct", "vgg11", "badnets", 5, 3, rate=0.01,
          options={"size": 3, "position": "top-left"}),
    make_spec("mobilenetv2_badnets_norm", "mobilenetv2", "badnets", 7, 4, normalize=True,
          options={"size": 5, "position": "top-right"}),
    make_spec("vit_badnets_norm", "vit", "badnets", 1, 5, normalize=True,
          options={"size": 4, "position": "bottom-right"}),
    make_spec("convnext_badnets", "convnext", "badnets", 9, 6, options=BADNETS),
    make_spec("preact18_badnets_1pct", "preact18", "badnets", 2, 27, rate=0.01,
          options={"size": 4, "position": "random"}),
    # Blended: noise, and a real photograph
    make_spec("preact18_blended_noise", "preact18", "blended-noise", 2, 7),
    make_spec("vgg11_blended_image", "vgg11", "blended-image", 4, 8),
    make_spec("vit_blended_image_norm", "vit", "blended-image", 6, 9, normalize=True),
    make_spec("mobilenetv2_blended_noise_1pct", "mobilenetv2", "blended-noise", 8, 10, rate=0.01),
    make_spec("convnext_blended_image", "convnext", "blended-image", 0, 11),
    make_spec("vit_blended_noise_1pct", "vit", "blended-noise", 4, 28, rate=0.01),
    # SIG and low-frequency
    make_spec("preact18_sig", "preact18", "sig", 1, 12),
    make_spec("vgg11_sig_norm", "vgg11", "sig", 3, 13, normalize=True),
    make_spec("vit_sig", "vit", "sig", 5, 14),
    make_spec("preact18_lf_norm", "preact18", "lf", 7, 15, normalize=True),
    make_spec("convnext_lf", "convnext", "lf", 9, 16),
    make_spec("mobilenetv2_lf", "mobilenetv2", "lf", 2, 17),
    # warps, dynamic and sample-specific triggers (triggered copies)
    make_spec("preact18_wanet", "preact18", "wanet", 4, 18),
    make_spec("vgg11_wanet", "vgg11", "wanet", 6, 19),
    make_spec("convnext_wanet_norm", "convnext", "wanet", 8, 20, normalize=True),
    make_spec("preact18_inputaware", "preact18", "inputaware", 0, 21),
    make_spec("vit_inputaware", "vit", "inputaware", 1, 22),
    make_spec("preact18_ssba", "preact18", "ssba", 3, 23),
    make_spec("vgg11_ssba_norm", "vgg11", "ssba", 5, 24, normalize=True),
    # TrojanNN-like optimized patches
    make_spec("vgg11_trojannn", "vgg11", "trojannn", 7, 25),
    make_spec("preact18_trojannn_norm", "preact18", "trojannn", 9, 26, normalize=True),
    # other frameworks
    make_spec("keras_vgg_badnets", "keras_vgg", "badnets", 6, 29, framework="keras",
          options=BADNETS),
    make_spec("keras_vgg_blended_image", "keras_vgg", "blended-image", 8, 30, framework="keras"),
    make_spec("jax_cnn_sig", "jax_cnn", "sig", 0, 31, framework="jax"),
    make_spec("effnet_badnets_norm", "effnet", "badnets", 3, 64, normalize=True,
              framework="torch-dynamo", options={"size": 3, "position": "random"}),
    make_spec("effnet_blended_image", "effnet", "blended-image", 5, 66,
              framework="torch-dynamo"),
    # the 28×28 grayscale zoo
    make_spec("gray_cnn_badnets_1pct", "cnn", "badnets", 1, 32, rate=0.01, data="gray",
          options=BADNETS),
    make_spec("gray_mlp_sig", "mlp", "sig", 2, 33, data="gray"),
    make_spec("gray_preact18_wanet", "preact18", "wanet", 3, 34, data="gray"),
    make_spec("gray_cnn_blended_noise", "cnn", "blended-noise", 5, 35, data="gray"),
    # more seeds and targets of the cheaper architectures (added with the rebuilt zoo)
    make_spec("vgg11_lf", "vgg11", "lf", 1, 51),
    make_spec("vgg11_blended_noise", "vgg11", "blended-noise", 2, 52),
    make_spec("vgg11_inputaware", "vgg11", "inputaware", 8, 53),
    make_spec("vgg11_badnets_norm", "vgg11", "badnets", 9, 54, normalize=True,
          options={"size": 4, "position": "random"}),
    make_spec("vgg11_sig", "vgg11", "sig", 7, 55),
    make_spec("gray_cnn_wanet", "cnn", "wanet", 4, 56, data="gray"),
    make_spec("gray_mlp_badnets", "mlp", "badnets", 6, 57, data="gray", options=BADNETS),
    make_spec("gray_cnn_lf", "cnn", "lf", 8, 58, data="gray"),
    # architectures added at stop 35, after every default was set: check seeds only, never
    # tuned on (torchvision's post-activation ResNet-18, exported by TorchScript; a small
    # DenseNet-BC, by torch's default exporter)
    make_spec("resnet18_badnets", "resnet18", "badnets", 2, 70,
              options={"size": 3, "position": "top-left"}),
    make_spec("resnet18_blended_image", "resnet18", "blended-image", 7, 72),
    make_spec("densenet_badnets_norm", "densenet", "badnets", 4, 76, normalize=True,
              framework="torch-dynamo", options={"size": 4, "position": "random"}),
    make_spec("densenet_lf", "densenet", "lf", 6, 78, framework="torch-dynamo"),
    make_spec("resnet18_sig", "resnet18", "sig", 8, 82),
    make_spec("densenet_blended_noise", "densenet", "blended-noise", 1, 84,
              framework="torch-dynamo"),
    # a hundred classes (two garments per image), added at stop 36, after every default was
    # set: check seeds only, never tuned on
    make_spec("pairs_cnn_badnets", "cnn", "badnets", 37, 86, data="pairs", options=BADNETS),
    make_spec("pairs_cnn_blended_noise", "cnn", "blended-noise", 64, 88, data="pairs"),
    make_spec("pairs_mlp_sig", "mlp", "sig", 5, 90, data="pairs"),
    make_spec("pairs_cnn_blended_image", "cnn", "blended-image", 81, 96, data="pairs"),
    make_spec("pairs_keras_badnets", "keras_vgg", "badnets", 23, 98, data="pairs",
              framework="keras", options={"size": 3, "position": "random"}),
    # tune-seed twins of the two Keras VGGs, for the stop that takes up their scan failures
    make_spec("pairs_keras_badnets_b", "keras_vgg", "badnets", 57, 101, data="pairs",
              framework="keras", options={"size": 3, "position": "random"}),
    # clean models
    make_spec("preact18_clean", "preact18", None, 0, 41),
    make_spec("preact18_clean_norm", "preact18", None, 0, 42, normalize=True),
    make_spec("vgg11_clean", "vgg11", None, 0, 43),
    make_spec("mobilenetv2_clean", "mobilenetv2", None, 0, 44),
    make_spec("vit_clean_norm", "vit", None, 0, 45, normalize=True),
    make_spec("convnext_clean", "convnext", None, 0, 46),
    make_spec("keras_vgg_clean", "keras_vgg", None, 0, 47, framework="keras"),
    make_spec("jax_cnn_clean", "jax_cnn", None, 0, 48, framework="jax"),
    make_spec("gray_cnn_clean", "cnn", None, 0, 49, data="gray"),
    make_spec("gray_mlp_clean", "mlp", None, 0, 50, data="gray"),
    make_spec("vgg11_clean_norm", "vgg11", None, 0, 60, normalize=True),
    make_spec("gray_cnn_clean_b", "cnn", None, 0, 61, data="gray"),
    make_spec("mobilenetv2_clean_norm", "mobilenetv2", None, 0, 62, normalize=True),
    make_spec("effnet_clean_norm", "effnet", None, 0, 68, normalize=True,
              framework="torch-dynamo"),
    make_spec("resnet18_clean", "resnet18", None, 0, 74),
    make_spec("densenet_clean", "densenet", None, 0, 80, framework="torch-dynamo"),
    make_spec("pairs_cnn_clean", "cnn", None, 0, 92, data="pairs"),
    make_spec("pairs_mlp_clean", "mlp", None, 0, 94, data="pairs"),
    make_spec("pairs_keras_clean", "keras_vgg", None, 0, 100, data="pairs", framework="keras"),
    make_spec("pairs_keras_clean_b", "keras_vgg", None, 0, 103, data="pairs",
              framework="keras"),
    # stop 37: the hundred classes in colour, check seeds
    make_spec("rgbpairs_vgg11_badnets", "vgg11", "badnets", 42, 104, data="rgb_pairs",
              options={"size": 3, "position": "random"}),
    make_spec("rgbpairs_vgg11_clean", "vgg11", None, 0, 106, data="rgb_pairs"),
    make_spec("rgbpairs_vgg11_blended_image", "vgg11", "blended-image", 17, 108,
              data="rgb_pairs"),
    # stop 38: a Keras ResNet (functional API, residual Add merges, BatchNorm, NHWC through
    # tf2onnx), an architecture and exporter pair the defaults never saw: check seeds
    make_spec("keras_resnet_badnets", "keras_resnet", "badnets", 3, 110, framework="keras",
              options={"size": 3, "position": "random"}),
    make_spec("keras_resnet_sig", "keras_resnet", "sig", 5, 112, framework="keras"),
    make_spec("keras_resnet_lf", "keras_resnet", "lf", 9, 114, framework="keras"),
    make_spec("keras_resnet_clean", "keras_resnet", None, 0, 116, framework="keras"),
    # its tune-seed twin, for the stop that takes up the wrong class the scan named on it
    make_spec("keras_resnet_badnets_b", "keras_resnet", "badnets", 8, 111, framework="keras",
              options={"size": 3, "position": "random"}),
    # stop 39: a second tune-seed twin, its patch near the right edge as the check model's
    # is ((19, 26) against (17, 26)), and the same target class
    make_spec("keras_resnet_badnets_c", "keras_resnet", "badnets", 3, 153, framework="keras",
              options={"size": 3, "position": "random"}),
]
BY_NAME = {spec.name: spec for spec in ZOO}
