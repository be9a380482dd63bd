"""The nn.Modules of the built-in node kinds, in torchvision's layout (state-dict names line up).

Each node kind (:mod:`spnas.ir.nodes`) names its module here; the kind's tensors and MACs are read
off the module built on the meta device, so a layout is written once. The compiler
(:mod:`spnas.detect.compile`) instantiates them, one submodule per node.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spnas.ir.specs import BlockSpec, FuseSpec, StemSpec

__all__ = ["Stem", "BasicBlock", "Bottleneck", "Fuse", "ResizeAdd", "residual_block"]


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    pad = dilation * (k - 1) // 2
    return nn.Conv2d(cin, cout, k, stride, pad, groups=groups, dilation=dilation, bias=False)


def _shortcut(spec: BlockSpec) -> nn.Module | None:
    if spec.shortcut == "identity":
        return None
    layers: list[nn.Module] = [_conv(spec.in_channels, spec.out_channels, 1, spec.stride)]
    if spec.shortcut == "conv_bn":
        layers.append(nn.BatchNorm2d(spec.out_channels))
    return nn.Sequential(*layers)


class Stem(nn.Module):
    """torchvision's stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) or the deep stem (two 3x3/2 convs)."""

    __constants__ = ["deep"]  # TorchScript compiles only the branch this stem has

    def __init__(self, spec: StemSpec) -> None:
        super().__init__()
        self.deep = spec.style == "deep"
        if self.deep:
            mid = spec.out_channels // 2
            self.conv1 = _conv(spec.in_channels, mid, 3, 2)
            self.bn1 = nn.BatchNorm2d(mid)
            self.conv2 = _conv(mid, spec.out_channels, 3, 2)
            self.bn2 = nn.BatchNorm2d(spec.out_channels)
        else:
            self.conv1 = nn.Conv2d(spec.in_channels, spec.out_channels, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(spec.out_channels)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep:
            return self.relu(self.bn2(self.conv2(x)))
        return self.maxpool(x)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock, with dilation and a BN-free shortcut allowed."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        d = spec.dilation
        self.conv1 = _conv(spec.in_channels, spec.planes, 3, spec.stride, dilation=d)
        self.bn1 = nn.BatchNorm2d(spec.planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(spec.planes, spec.planes, 3, dilation=d)
        self.bn2 = nn.BatchNorm2d(spec.planes)
        self.downsample = _shortcut(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place, as torchvision does: a fresh tensor per block costs ~4% at 512 px
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: stride on the 3x3), groups and base width for ResNeXt."""

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        w, d = spec.width, spec.dilation
        self.conv1 = _conv(spec.in_channels, w, 1)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = _conv(w, w, 3, spec.stride, spec.groups, d)
        self.bn2 = nn.BatchNorm2d(w)
        self.conv3 = _conv(w, spec.out_channels, 1)
        self.bn3 = nn.BatchNorm2d(spec.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class Fuse(nn.Module):
    """1x1 conv + BN from a stage's output to the previous stage's channels (the resize is in ResizeAdd)."""

    def __init__(self, spec: FuseSpec) -> None:
        super().__init__()
        self.conv = _conv(spec.in_channels, spec.out_channels, 1)
        self.bn = nn.BatchNorm2d(spec.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class ResizeAdd(nn.Module):
    """``a + nearest_resize(b, a's size)``."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if b.shape[-2:] != a.shape[-2:]:
            b = F.interpolate(b, size=[a.shape[-2], a.shape[-1]], mode="nearest")
        return a + b


def residual_block(spec: BlockSpec) -> nn.Module:
    """The ``block`` kind's builder: torchvision's BasicBlock or Bottleneck."""
    return BasicBlock(spec) if spec.block == "basic" else Bottleneck(spec)
