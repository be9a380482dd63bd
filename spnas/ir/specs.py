"""The frozen spec dataclasses of the built-in node kinds, and ``TensorSpec``.

A spec is all a node's module needs to be built (detectron2's config-per-layer, frozen so it
hashes and compares). Specs check their own fields and raise :class:`ArchError` naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from spnas.errors import ArchError

__all__ = ["TensorSpec", "StemSpec", "BlockSpec", "FuseSpec", "AddSpec", "OutputSpec", "output_name"]


@dataclass(frozen=True)
class TensorSpec:
    """What flows along an edge: channels and stride relative to the image (detectron2's ShapeSpec)."""

    channels: int
    stride: int


@dataclass(frozen=True)
class StemSpec:
    """``resnet``: 7x7/2 conv + BN + ReLU + 3x3/2 max-pool (torchvision); ``deep``: two 3x3/2 convs."""

    style: str = "resnet"
    in_channels: int = 3
    out_channels: int = 64

    def __post_init__(self) -> None:
        if self.style not in ("resnet", "deep"):
            raise ArchError(f"stem style: expected 'resnet' or 'deep', got {str(self.style)[:40]!r}")
        _positive(self, "in_channels", "out_channels")


@dataclass(frozen=True)
class BlockSpec:
    """A residual block in torchvision's layout (BasicBlock or Bottleneck, ResNet v1.5).

    ``planes`` are the base channels; the block outputs ``planes * expansion``. ``shortcut`` is
    ``identity``, ``conv_bn`` (torchvision's 1x1 conv + BN downsample) or ``conv`` (a 1x1 conv
    without BN, which morphisms use because it is exact in train mode too).
    """

    block: str
    in_channels: int
    planes: int
    stride: int = 1
    groups: int = 1
    base_width: int = 64
    dilation: int = 1
    shortcut: str = "identity"

    def __post_init__(self) -> None:
        if self.block not in ("basic", "bottleneck"):
            raise ArchError(f"block: expected 'basic' or 'bottleneck', got {self.block!r}")
        if self.shortcut not in ("identity", "conv_bn", "conv"):
            raise ArchError(f"shortcut: expected identity, conv_bn or conv, got {self.shortcut!r}")
        if self.block == "basic" and (self.groups != 1 or self.base_width != 64):
            raise ArchError(f"basic block: expected groups=1, base_width=64, got {self.groups}, {self.base_width}")
        for f in ("in_channels", "planes", "stride", "groups", "base_width", "dilation"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ArchError(f"block {f}: expected a positive int, got {getattr(self, f)!r}")
        if self.stride not in (1, 2):
            raise ArchError(f"block stride: expected 1 or 2, got {self.stride}")
        if self.shortcut == "identity" and (self.stride != 1 or self.in_channels != self.out_channels):
            raise ArchError(
                f"identity shortcut needs stride 1 and in == out channels, got stride {self.stride}, "
                f"{self.in_channels} -> {self.out_channels}"
            )

    @property
    def expansion(self) -> int:
        return 1 if self.block == "basic" else 4

    @property
    def out_channels(self) -> int:
        return self.planes * self.expansion

    @property
    def width(self) -> int:
        """Channels inside the block (torchvision's Bottleneck ``width``)."""
        if self.block == "basic":
            return self.planes
        return int(self.planes * (self.base_width / 64.0)) * self.groups


@dataclass(frozen=True)
class FuseSpec:
    """The parallel level's ``upsample(.)``: 1x1 conv + BN; the following ``add`` resizes."""

    in_channels: int
    out_channels: int

    def __post_init__(self) -> None:
        _positive(self, "in_channels", "out_channels")


@dataclass(frozen=True)
class AddSpec:
    """Sum of a high-resolution input and a lower-resolution one resized (nearest) to it."""

    channels: int

    def __post_init__(self) -> None:
        _positive(self, "channels")


@dataclass(frozen=True)
class OutputSpec:
    """A stage output fed to the FPN; ``name`` is its key in the backbone's OrderedDict."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", self.name):
            raise ArchError(f"output name: expected a plain identifier such as res4, got {str(self.name)[:40]!r}")


def _positive(spec: Any, *fields: str) -> None:
    for f in fields:
        v = getattr(spec, f)
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1_000_000:
            raise ArchError(f"{type(spec).__name__} {f}: expected an int in 1..1000000, got {str(v)[:40]!r}")


def output_name(stride: int) -> str:
    """detectron2's naming of a stage output: stride 4 -> ``res2``, stride 8 -> ``res3``, …"""
    return f"res{stride.bit_length() - 1}"
