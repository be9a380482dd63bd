"""Node kinds of the architecture graph: one registration per kind.

A kind is its frozen **spec** dataclass, its **role** in the graph, and its **module** builder
(``spec -> nn.Module``). Everything else is read off that module built on the meta device (no
memory, no random init): the names and shapes of its tensors, its multiply-accumulates for a given
input (``torch.utils.flop_counter``), and, unless the kind states it, how a :class:`TensorSpec`
flows through it. A layout is therefore written once, in the module.

Roles (the IR's structural queries, :meth:`Arch.stages` and friends, work from roles, never from
kind names, so a new kind needs no edit inside spnas):

========== ===== ======================================================================
role       arity what it is
========== ===== ======================================================================
``source`` 0     the stem: takes the image (``spec.in_channels`` channels); exactly one
``block``  1     a unit of a chain (the main chain or a subnet's); a block whose output is
                 coarser than its input starts a stage
``fuse``   1     the side branch from a stage's last output into its next parallel subnet
``merge``  2     starts a subnet: ``(previous stage's output, fuse)``
``tap``    1     a stage output the FPN reads (``spec.name``); no module, no tensors
========== ===== ======================================================================

A user file adds a kind with the decorator form::

    @register_kind("se", spec=SESpec, role="block")
    class SqueezeExcite(nn.Module):
        def __init__(self, spec: SESpec): ...
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from spnas.errors import ArchError
from spnas.ir.modules import Fuse, ResizeAdd, Stem, residual_block
from spnas.ir.specs import AddSpec, BlockSpec, FuseSpec, OutputSpec, StemSpec, TensorSpec, output_name

__all__ = [
    "TensorSpec",
    "StemSpec",
    "BlockSpec",
    "FuseSpec",
    "AddSpec",
    "OutputSpec",
    "NodeKind",
    "ROLES",
    "BUILTIN_KINDS",
    "register_kind",
    "unregister_kind",
    "get_kind",
    "list_kinds",
    "output_name",
]

ROLES: dict[str, int] = {"source": 0, "block": 1, "fuse": 1, "merge": 2, "tap": 1}  # role -> arity
_CACHE_LIMIT = 4096


class NodeKind:
    """A node kind: ``name``, ``spec_type``, ``role`` and the module builder ``module(spec)``.

    Built-in kinds subclass it; a user's kind is usually made by the :func:`register_kind`
    decorator. ``init`` (optional) adjusts the default initialisation: it receives the spec and the
    default tensors (convs Kaiming-normal fan-out as torchvision, BN identity, biases zero) and
    returns them, for instance with a last layer zeroed so a fresh node computes the identity.
    """

    name: ClassVar[str]
    spec_type: ClassVar[type]
    role: ClassVar[str] = "block"

    def __init__(self) -> None:
        self._tensors: dict[Any, dict[str, tuple[int, ...]]] = {}
        self._macs: dict[Any, tuple[int, tuple[int, int, int]]] = {}
        self._flow: dict[Any, TensorSpec] = {}

    @property
    def arity(self) -> int:
        return ROLES[self.role]

    # ------------------------------------------------------------------ what a kind states
    def build(self, spec: Any) -> nn.Module | None:
        """The node's module (its state-dict names are the IR's tensor names); None for a tap."""
        raise NotImplementedError

    def adjust_init(self, spec: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return tensors

    # ------------------------------------------------------------------ what is derived from the module
    def tensors(self, spec: Any) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the node's parameters and buffers: the module's state dict (meta device)."""
        got = self._tensors.get(spec)
        if got is None:
            with torch.device("meta"):
                m = self.build(spec)
            got = {} if m is None else {k: tuple(v.shape) for k, v in m.state_dict().items()}
            self._remember(self._tensors, spec, got)
        return dict(got)

    def init(self, spec: Any, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Fresh tensors drawn from ``gen`` in state-dict order, then :meth:`adjust_init`."""
        out = {name: _init_tensor(name, shape, gen) for name, shape in self.tensors(spec).items()}
        return self.adjust_init(spec, out)

    def macs(self, spec: Any, inputs: list[tuple[int, int, int]]) -> tuple[int, tuple[int, int, int]]:
        """Multiply-accumulates and the output's (C, H, W), given the inputs' (C, H, W), one image.

        Counted by ``torch.utils.flop_counter`` on the module run on the meta device (convolutions
        and matrix products; pooling, BN folded at inference, adds and resizes count zero).
        """
        key = (spec, tuple(inputs))
        got = self._macs.get(key)
        if got is None:
            with torch.device("meta"):
                m = self.build(spec)
            if m is None:
                got = (0, inputs[0])
            else:
                xs = [torch.empty(1, *s, device="meta") for s in inputs]
                try:
                    with FlopCounterMode(display=False) as fc, torch.no_grad():
                        y = m.eval()(*xs)
                except Exception as e:  # noqa: BLE001 - a kind's module failing on its input is the node's error
                    raise ArchError(f"{self.name} module on inputs {list(inputs)}: {_first_line(e)}") from e
                got = (fc.get_total_flops() // 2, tuple(y.shape[1:]))
            self._remember(self._macs, key, got)
        return got

    def out_spec(self, spec: Any, inputs: list[TensorSpec]) -> TensorSpec:
        """Shape inference, read off a meta run at a resolution fine enough for every input.

        Built-in kinds state it instead, to name the mismatch in their own words.
        """
        key = (spec, tuple(inputs))
        got = self._flow.get(key)
        if got is None:
            if self.arity == 0:
                shapes = [(getattr(spec, "in_channels", 3), 256, 256)]
                base = 256
            else:
                base = 8 * max(i.stride for i in inputs)
                shapes = [(i.channels, base // i.stride, base // i.stride) for i in inputs]
            _, (c, h, w) = self.macs(spec, shapes)
            if not h or base % h:
                raise ArchError(f"output size {h}x{w} from {base}x{base} is no whole stride")
            got = TensorSpec(int(c), base // h)
            self._remember(self._flow, key, got)
        return got

    @property
    def source(self) -> str:
        """The file that defines the kind (recorded in ``arch.yaml`` for plugin kinds)."""
        obj = getattr(self, "_builder", None) or type(self)
        try:
            return inspect.getsourcefile(obj) or "<unknown>"
        except TypeError:
            return "<unknown>"

    def spec_from_dict(self, d: dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(self.spec_type)}
        unknown = set(d) - names
        if unknown:
            raise ArchError(f"{self.name} spec: unknown field(s) {sorted(unknown)}, expected some of {sorted(names)}")
        return self.spec_type(**d)

    @staticmethod
    def _remember(cache: dict, key: Any, value: Any) -> None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[key] = value


def _first_line(e: BaseException) -> str:
    return ((str(e).strip().splitlines() or [type(e).__name__])[0])[:200]


def _init_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros((), dtype=torch.long)
    if leaf == "running_var":
        return torch.ones(shape)
    if leaf in ("running_mean", "bias"):
        return torch.zeros(shape)
    if len(shape) >= 2:  # conv / linear weight, kaiming_normal_(mode="fan_out", nonlinearity="relu")
        fan_out = shape[0] * math.prod(shape[2:])
        std = math.sqrt(2.0 / fan_out)
        return torch.randn(shape, generator=gen) * std
    return torch.ones(shape)  # BN weight


class StemKind(NodeKind):
    name = "stem"
    spec_type = StemSpec
    role = "source"

    def build(self, spec: StemSpec) -> nn.Module:
        return Stem(spec)

    def out_spec(self, spec: StemSpec, inputs: list[TensorSpec]) -> TensorSpec:
        return TensorSpec(spec.out_channels, 4)


class BlockKind(NodeKind):
    name = "block"
    spec_type = BlockSpec
    role = "block"

    def build(self, spec: BlockSpec) -> nn.Module:
        return residual_block(spec)

    def out_spec(self, spec: BlockSpec, inputs: list[TensorSpec]) -> TensorSpec:
        (x,) = inputs
        if x.channels != spec.in_channels:
            raise ArchError(f"expected {spec.in_channels} input channels, got {x.channels}")
        return TensorSpec(spec.out_channels, x.stride * spec.stride)


class FuseKind(NodeKind):
    name = "fuse"
    spec_type = FuseSpec
    role = "fuse"

    def build(self, spec: FuseSpec) -> nn.Module:
        return Fuse(spec)

    def out_spec(self, spec: FuseSpec, inputs: list[TensorSpec]) -> TensorSpec:
        (x,) = inputs
        if x.channels != spec.in_channels:
            raise ArchError(f"expected {spec.in_channels} input channels, got {x.channels}")
        return TensorSpec(spec.out_channels, x.stride)

    def adjust_init(self, spec: FuseSpec, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tensors["bn.weight"].zero_()  # gamma = beta = 0: a new fuse adds nothing
        return tensors


class AddKind(NodeKind):
    name = "add"
    spec_type = AddSpec
    role = "merge"

    def build(self, spec: AddSpec) -> nn.Module:
        return ResizeAdd()

    def out_spec(self, spec: AddSpec, inputs: list[TensorSpec]) -> TensorSpec:
        a, b = inputs
        if a.channels != spec.channels or b.channels != spec.channels:
            raise ArchError(f"expected two inputs of {spec.channels} channels, got {a.channels} and {b.channels}")
        if b.stride < a.stride:
            raise ArchError(f"second input must not be finer than the first, got strides {a.stride} and {b.stride}")
        return a


class OutputKind(NodeKind):
    name = "output"
    spec_type = OutputSpec
    role = "tap"

    def build(self, spec: OutputSpec) -> None:
        return None

    def out_spec(self, spec: OutputSpec, inputs: list[TensorSpec]) -> TensorSpec:
        return inputs[0]


class _UserKind(NodeKind):
    """A kind made by the :func:`register_kind` decorator from a module class or builder function."""

    def __init__(self, name: str, spec_type: type, builder: Callable[[Any], nn.Module], role: str,
                 init: Callable[[Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.spec_type = spec_type  # type: ignore[misc]
        self.role = role  # type: ignore[misc]
        self._builder = builder
        self._init = init

    def build(self, spec: Any) -> nn.Module:
        return self._builder(spec)

    def adjust_init(self, spec: Any, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return tensors if self._init is None else self._init(spec, tensors)


_KINDS: dict[str, NodeKind] = {}
BUILTIN_KINDS = ("stem", "block", "fuse", "add", "output")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def register_kind(kind: NodeKind | str, spec: type | None = None, *, role: str = "block",
                  init: Callable[[Any, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None) -> Any:
    """Register a node kind. Two forms:

    ``register_kind(kind_instance)`` for a :class:`NodeKind` subclass, or the decorator
    ``@register_kind("se", spec=SESpec, role="block", init=...)`` over an ``nn.Module`` class (or a
    function) taking the spec. A duplicate name, an unknown role, or a spec that is not a frozen
    dataclass is refused with one line naming the kind.
    """
    if isinstance(kind, NodeKind):
        _check_kind(kind.name, kind.spec_type, kind.role)
        _KINDS[kind.name] = kind
        return kind
    if not isinstance(kind, str):
        raise ArchError(f"register_kind: expected a NodeKind or a kind name, got {type(kind).__name__}")
    name = kind

    def deco(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if not callable(builder):
            raise ArchError(f"node kind {name!r}: expected an nn.Module class or a builder function, got {type(builder).__name__}")
        if init is not None and not callable(init):
            raise ArchError(f"node kind {name!r}: init must be callable(spec, tensors), got {type(init).__name__}")
        _check_kind(name, spec, role)
        _KINDS[name] = _UserKind(name, spec, builder, role, init)  # type: ignore[arg-type]
        return builder

    return deco


def _check_kind(name: Any, spec_type: Any, role: Any) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ArchError(f"node kind name: expected lower-case letters, digits and '_' (at most 32), got {str(name)[:40]!r}")
    if name in _KINDS:
        raise ArchError(f"node kind {name!r} is already registered")
    if not (inspect.isclass(spec_type) and dataclasses.is_dataclass(spec_type) and spec_type.__dataclass_params__.frozen):
        raise ArchError(f"node kind {name!r}: spec must be a frozen dataclass (@dataclass(frozen=True)), got {spec_type!r}")
    if role not in ROLES:
        raise ArchError(f"node kind {name!r}: role must be one of {', '.join(ROLES)}, got {role!r}")


def unregister_kind(name: str) -> None:
    """Forget a user's kind (tests, notebooks); the built-in kinds stay."""
    if name in BUILTIN_KINDS:
        raise ArchError(f"node kind {name!r} is built in and cannot be unregistered")
    _KINDS.pop(name, None)


def get_kind(name: str) -> NodeKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ArchError(f"unknown node kind {name!r}, expected one of {sorted(_KINDS)}") from None


def list_kinds() -> list[str]:
    return sorted(_KINDS)


for _k in (StemKind(), BlockKind(), FuseKind(), AddKind(), OutputKind()):
    register_kind(_k)
