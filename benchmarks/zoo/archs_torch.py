"""PyTorch architectures of the zoo: the field's topologies, narrowed in width so that they
train in minutes on two CPU cores."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip


class PreActResNet18(nn.Module):
    """PreAct-ResNet-18 (BackdoorBench's model): [2, 2, 2, 2] blocks, widths / ``shrink``."""

    def __init__(self, channels: int = 3, classes: int = 10, base: int = 16):
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base]
        self.stem = nn.Conv2d(channels, base, 3, 1, 1, bias=False)
        blocks, cin = [], base
        for index, width in enumerate(widths):
            for repeat in range(2):
                blocks.append(PreActBlock(cin, width, 2 if index and not repeat else 1))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class VGG11BN(nn.Module):
    """VGG-11 with BatchNorm, every width divided by 8."""
    CONFIG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]

    def __init__(self, channels: int = 3, classes: int = 10, shrink: int = 8):
        super().__init__()
        layers, cin = [], channels
        for item in self.CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, item // shrink, 3, padding=1),
                           nn.BatchNorm2d(item // shrink), nn.ReLU()]
                cin = item // shrink
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin, 4 * cin), nn.ReLU(),
                                        nn.Linear(4 * cin, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        layers = [] if expand == 1 else [nn.Conv2d(cin, hidden, 1, bias=False),
                                         nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 at width multiplier 0.25 (depthwise convolutions), with fewer repeats and
    a strided stem so that a 32×32 image ends at 4×4."""
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1),
                (6, 160, 1, 1), (6, 320, 1, 1)]

    def __init__(self, channels: int = 3, classes: int = 10, width: float = 0.25):
        super().__init__()
        scale = lambda c: max(8, int(c * width))  # noqa: E731
        layers = [nn.Conv2d(channels, scale(32), 3, 2, 1, bias=False),
                  nn.BatchNorm2d(scale(32)), nn.ReLU6()]
        cin = scale(32)
        for expand, cout, repeats, stride in self.SETTINGS:
            for index in range(repeats):
                layers.append(InvertedResidual(cin, scale(cout), stride if not index else 1,
                                               expand))
                cin = scale(cout)
        layers += [nn.Conv2d(cin, 256, 1, bias=False), nn.BatchNorm2d(256), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(256, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class Attention(nn.Module):
    """Multi-head self-attention written with MatMul projections (exported as MatMul+Add)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax(q @ k.transpose(-2, -1) / (dim // self.heads) ** 0.5, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))


class ViT(nn.Module):
    """A small ViT: 4×4 patch embedding, class token, pre-LayerNorm blocks with GELU MLPs."""

    def __init__(self, channels: int = 3, classes: int = 10, side: int = 32, patch: int = 4,
                 dim: int = 64, depth: int = 4, heads: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (side // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "ln1": nn.LayerNorm(dim), "attn": Attention(dim, heads), "ln2": nn.LayerNorm(dim),
            "mlp": nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))})
            for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], 1) + self.pos
        for block in self.blocks:
            tokens = tokens + block["attn"](block["ln1"](tokens))
            tokens = tokens + block["mlp"](block["ln2"](tokens))
        return self.head(self.norm(tokens[:, 0]))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x):
        out = self.dwconv(x).permute(0, 2, 3, 1)               # channels last
        out = self.gamma * self.mlp(self.norm(out))
        return x + out.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt-style: 2×2 patchify stem, 7×7 depthwise convs, LayerNorm, channels-last MLPs."""

    def __init__(self, channels: int = 3, classes: int = 10, dims=(24, 48, 96), depths=(1, 1, 2)):
        super().__init__()
        layers, cin = [nn.Conv2d(channels, dims[0], 2, 2)], dims[0]
        for index, (dim, depth) in enumerate(zip(dims, depths)):
            if index:
                layers.append(nn.Conv2d(cin, dim, 2, 2))
            layers += [ConvNeXtBlock(dim) for _ in range(depth)]
            cin = dim
        self.features = nn.Sequential(*layers)
        self.norm, self.head = nn.LayerNorm(cin), nn.Linear(cin, classes)

    def forward(self, x):
        return self.head(self.norm(self.features(x).mean((2, 3))))


class SmallCNN(nn.Module):
    """The grayscale zoo's CNN (28×28)."""

    def __init__(self, channels: int = 1, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(128), nn.ReLU(),
                                  nn.Linear(128, classes))

    def forward(self, x):
        return self.head(self.features(x))


class MLP(nn.Module):
    def __init__(self, channels: int = 1, classes: int = 10, side: int = 28):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(channels * side * side, 256), nn.ReLU(),
                                 nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x):
        return self.net(x)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // reduction, 1)
        self.expand = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        scale = self.expand(F.silu(self.reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(scale)


class MBConv(nn.Module):
    """EfficientNet's block: expand 1x1, depthwise 3x3, squeeze-excite, project 1x1."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.SiLU(), SqueezeExcite(mid), nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class EfficientNetish(nn.Module):
    """A narrow EfficientNet: SiLU, depthwise convolutions, squeeze-excite gates."""

    def __init__(self, channels: int = 3, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 24, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(24), nn.SiLU())
        self.blocks = nn.Sequential(MBConv(24, 32, 2), MBConv(32, 32, 1), MBConv(32, 64, 2),
                                    MBConv(64, 64, 1))
        self.head = nn.Sequential(nn.Conv2d(64, 128, 1), nn.BatchNorm2d(128), nn.SiLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(128, classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class BasicBlock(nn.Module):
    """torchvision's ResNet block: conv-BN-ReLU, conv-BN, added to the bypass, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        skip = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + skip)


class ResNet18(nn.Module):
    """torchvision's ResNet-18 (post-activation) for 32x32 input: a 3x3 stem, no max-pool,
    [2, 2, 2, 2] blocks, widths / 4."""

    def __init__(self, channels: int = 3, classes: int = 10, base: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, base, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(base), nn.ReLU())
        blocks, cin = [], base
        for index, width in enumerate([base, 2 * base, 4 * base, 8 * base]):
            for repeat in range(2):
                blocks.append(BasicBlock(cin, width, 2 if index and not repeat else 1))
                cin = width
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        out = F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1)
        return self.fc(torch.flatten(out, 1))


class DenseLayer(nn.Module):
    """DenseNet-BC's layer: BN-ReLU-1x1 conv, BN-ReLU-3x3 conv, concatenated to its input."""

    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.bottleneck = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(),
                                        nn.Conv2d(cin, 4 * growth, 1, bias=False))
        self.conv = nn.Sequential(nn.BatchNorm2d(4 * growth), nn.ReLU(),
                                  nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.conv(self.bottleneck(x))], 1)


class DenseNet(nn.Module):
    """A small DenseNet-BC: a stride-2 stem, three dense blocks of four layers (growth 12),
    each but the last followed by a transition (BN-ReLU-1x1 conv halving the channels, 2x2
    average pool)."""

    def __init__(self, channels: int = 3, classes: int = 10, growth: int = 12, depth: int = 4):
        super().__init__()
        cin, layers = 2 * growth, []
        layers.append(nn.Conv2d(channels, cin, 3, 2, 1, bias=False))
        for block in range(3):
            for _ in range(depth):
                layers.append(DenseLayer(cin, growth))
                cin += growth
            if block < 2:
                layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cin // 2, 1,
                                                                     bias=False),
                           nn.AvgPool2d(2)]
                cin //= 2
        self.features = nn.Sequential(*layers, nn.BatchNorm2d(cin), nn.ReLU())
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        out = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.fc(torch.flatten(out, 1))


class Normalized(nn.Module):
    """Takes channels-last input when ``nhwc``: a Transpose at the head of the graph."""

    def __init__(self, model: nn.Module, nhwc: bool):
        super().__init__()
        self.model, self.nhwc = model, nhwc

    def forward(self, x):
        return self.model(x.permute(0, 3, 1, 2) if self.nhwc else x)


ARCHS = {"preact18": PreActResNet18, "vgg11": VGG11BN, "mobilenetv2": MobileNetV2,
         "vit": ViT, "convnext": ConvNeXt, "cnn": SmallCNN, "mlp": MLP,
         "effnet": EfficientNetish, "resnet18": ResNet18, "densenet": DenseNet}
