"""Node kinds of the architecture graph: frozen specs, shapes, tensors and initialisation.

A kind is a small object registered by name: it knows its spec dataclass, how many inputs it takes,
how a :class:`TensorSpec` flows through it, the names and shapes of its weight tensors (in
torchvision's layout, so state dicts line up), how to initialise them from a seeded generator, and
its multiply-accumulates. The compiler (``spnas.detect.compile``) owns the matching nn.Modules; the IR
never builds one. New kinds call :func:`register_kind`.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from spnas.errors import ArchError

__all__ = [
    "TensorSpec",
    "StemSpec",
    "BlockSpec",
    "FuseSpec",
    "AddSpec",
    "OutputSpec",
    "NodeKind",
    "register_kind",
    "get_kind",
    "list_kinds",
    "output_name",
]


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


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (c,),
        f"{prefix}.bias": (c,),
        f"{prefix}.running_mean": (c,),
        f"{prefix}.running_var": (c,),
        f"{prefix}.num_batches_tracked": (),
    }


def _conv_out(size: int, k: int, s: int, p: int, d: int = 1) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class NodeKind:
    """Base class of a node kind; subclasses set ``name``, ``spec_type``, ``arity``."""

    name: ClassVar[str]
    spec_type: ClassVar[type]
    arity: ClassVar[int] = 1

    def out_spec(self, spec: Any, inputs: list[TensorSpec]) -> TensorSpec:
        raise NotImplementedError

    def tensors(self, spec: Any) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the node's parameters and buffers."""
        return {}

    def init(self, spec: Any, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Fresh tensors: convs Kaiming-normal (fan_out, as torchvision), BN identity."""
        out: dict[str, torch.Tensor] = {}
        for name, shape in self.tensors(spec).items():
            out[name] = _init_tensor(name, shape, gen)
        return out

    def macs(self, spec: Any, hw: list[tuple[int, int]]) -> tuple[int, tuple[int, int]]:
        """Multiply-accumulates and output (H, W) given the inputs' (H, W)."""
        return 0, hw[0]

    def spec_from_dict(self, d: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(self.spec_type)}
        unknown = set(d) - names
        if unknown:
            raise ArchError(f"{self.name} spec: unknown field(s) {sorted(unknown)}, expected some of {sorted(names)}")
        return self.spec_type(**d)


def _init_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros((), dtype=torch.long)
    if leaf == "running_var":
        return torch.ones(shape)
    if leaf in ("running_mean", "bias"):
        return torch.zeros(shape)
    if len(shape) == 4:  # conv weight, kaiming_normal_(mode="fan_out", nonlinearity="relu")
        fan_out = shape[0] * shape[2] * shape[3]
        std = math.sqrt(2.0 / fan_out)
        return torch.randn(shape, generator=gen) * std
    return torch.ones(shape)  # BN weight


class StemKind(NodeKind):
    name = "stem"
    spec_type = StemSpec
    arity = 0

    def out_spec(self, spec: StemSpec, inputs: list[TensorSpec]) -> TensorSpec:
        return TensorSpec(spec.out_channels, 4)

    def tensors(self, spec: StemSpec) -> dict[str, tuple[int, ...]]:
        if spec.style == "resnet":
            return {"conv1.weight": (spec.out_channels, spec.in_channels, 7, 7), **_bn("bn1", spec.out_channels)}
        mid = spec.out_channels // 2
        return {
            "conv1.weight": (mid, spec.in_channels, 3, 3),
            **_bn("bn1", mid),
            "conv2.weight": (spec.out_channels, mid, 3, 3),
            **_bn("bn2", spec.out_channels),
        }

    def macs(self, spec: StemSpec, hw: list[tuple[int, int]]) -> tuple[int, tuple[int, int]]:
        h, w = hw[0]
        if spec.style == "resnet":
            h, w = _conv_out(h, 7, 2, 3), _conv_out(w, 7, 2, 3)
            macs = spec.out_channels * spec.in_channels * 49 * h * w
            return macs, (_conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1))
        mid = spec.out_channels // 2
        h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
        macs = mid * spec.in_channels * 9 * h * w
        h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
        return macs + spec.out_channels * mid * 9 * h * w, (h, w)


class BlockKind(NodeKind):
    name = "block"
    spec_type = BlockSpec

    def out_spec(self, spec: BlockSpec, inputs: list[TensorSpec]) -> TensorSpec:
        (x,) = inputs
        if x.channels != spec.in_channels:
            raise ArchError(f"expected {spec.in_channels} input channels, got {x.channels}")
        return TensorSpec(spec.out_channels, x.stride * spec.stride)

    def tensors(self, spec: BlockSpec) -> dict[str, tuple[int, ...]]:
        w, out = spec.width, spec.out_channels
        if spec.block == "basic":
            t = {
                "conv1.weight": (w, spec.in_channels, 3, 3),
                **_bn("bn1", w),
                "conv2.weight": (out, w, 3, 3),
                **_bn("bn2", out),
            }
        else:
            t = {
                "conv1.weight": (w, spec.in_channels, 1, 1),
                **_bn("bn1", w),
                "conv2.weight": (w, w // spec.groups, 3, 3),
                **_bn("bn2", w),
                "conv3.weight": (out, w, 1, 1),
                **_bn("bn3", out),
            }
        if spec.shortcut != "identity":
            t["downsample.0.weight"] = (out, spec.in_channels, 1, 1)
        if spec.shortcut == "conv_bn":
            t.update(_bn("downsample.1", out))
        return t

    def macs(self, spec: BlockSpec, hw: list[tuple[int, int]]) -> tuple[int, tuple[int, int]]:
        h, w = hw[0]
        d, s, width, out = spec.dilation, spec.stride, spec.width, spec.out_channels
        ho, wo = _conv_out(h, 3, s, d, d), _conv_out(w, 3, s, d, d)
        if spec.block == "basic":
            macs = width * spec.in_channels * 9 * ho * wo + out * width * 9 * ho * wo
        else:
            macs = width * spec.in_channels * h * w
            macs += width * (width // spec.groups) * 9 * ho * wo
            macs += out * width * ho * wo
        if spec.shortcut != "identity":
            macs += out * spec.in_channels * _conv_out(h, 1, s, 0) * _conv_out(w, 1, s, 0)
        return macs, (ho, wo)


class FuseKind(NodeKind):
    name = "fuse"
    spec_type = FuseSpec

    def out_spec(self, spec: FuseSpec, inputs: list[TensorSpec]) -> TensorSpec:
        (x,) = inputs
        if x.channels != spec.in_channels:
            raise ArchError(f"expected {spec.in_channels} input channels, got {x.channels}")
        return TensorSpec(spec.out_channels, x.stride)

    def tensors(self, spec: FuseSpec) -> dict[str, tuple[int, ...]]:
        return {"conv.weight": (spec.out_channels, spec.in_channels, 1, 1), **_bn("bn", spec.out_channels)}

    def init(self, spec: FuseSpec, gen: torch.Generator) -> dict[str, torch.Tensor]:
        t = super().init(spec, gen)
        t["bn.weight"].zero_()  # gamma = beta = 0: a new fuse adds nothing (DESIGN §3)
        return t

    def macs(self, spec: FuseSpec, hw: list[tuple[int, int]]) -> tuple[int, tuple[int, int]]:
        h, w = hw[0]
        return spec.out_channels * spec.in_channels * h * w, (h, w)


class AddKind(NodeKind):
    name = "add"
    spec_type = AddSpec
    arity = 2

    def out_spec(self, spec: AddSpec, inputs: list[TensorSpec]) -> TensorSpec:
        a, b = inputs
        if a.channels != spec.channels or b.channels != spec.channels:
            raise ArchError(f"expected two inputs of {spec.channels} channels, got {a.channels} and {b.channels}")
        if b.stride < a.stride:
            raise ArchError(f"second input must not be finer than the first, got strides {a.stride} and {b.stride}")
        return a

    def macs(self, spec: AddSpec, hw: list[tuple[int, int]]) -> tuple[int, tuple[int, int]]:
        return 0, hw[0]


class OutputKind(NodeKind):
    name = "output"
    spec_type = OutputSpec

    def out_spec(self, spec: OutputSpec, inputs: list[TensorSpec]) -> TensorSpec:
        return inputs[0]


_KINDS: dict[str, NodeKind] = {}


def register_kind(kind: NodeKind) -> NodeKind:
    """Register a node kind under ``kind.name``; a duplicate name is an error."""
    if kind.name in _KINDS:
        raise ArchError(f"node kind {kind.name!r} is already registered")
    _KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> NodeKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ArchError(f"unknown node kind {name!r}, expected one of {sorted(_KINDS)}") from None


def list_kinds() -> list[str]:
    return sorted(_KINDS)


for _k in (StemKind(), BlockKind(), FuseKind(), AddKind(), OutputKind()):
    register_kind(_k)
