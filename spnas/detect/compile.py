"""The compiler: an :class:`~spnas.ir.Arch` to a plain, fast ``nn.Module`` and back.

``compile_backbone`` lowers each node through its kind's module builder (:mod:`spnas.ir.nodes`:
one registration per kind) into a submodule named by its node id, then writes a straight-line ``forward`` with torch.fx: no networkx
at run time. State-dict keys are ``<node_id>.<tensor>``, the IR's ``<node_id>/<tensor>``, so
``lift`` writes trained weights back by name. ``export_inference`` folds BatchNorm into the
convolutions and runs channels-last, eagerly, as frozen TorchScript, or frozen under inductor.

>>> body = compile_backbone(parse("BB(11,d1,d1,d1)"))
>>> list(body(torch.zeros(1, 3, 64, 64)))
['res2', 'res3', 'res4', 'res5']
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections import OrderedDict

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.ops.misc import FrozenBatchNorm2d

from spnas.errors import ArchError, ConfigError
from spnas.ir import Arch, get_kind
from spnas.ir.modules import BasicBlock, Bottleneck, Fuse, ResizeAdd, Stem

__all__ = [
    "compile_backbone",
    "lift",
    "module_key",
    "export_inference",
    "Backbone",
    "BasicBlock",
    "Bottleneck",
    "Stem",
    "Fuse",
    "ResizeAdd",
]

class Backbone(fx.GraphModule):
    """A compiled backbone: ``forward(x) -> OrderedDict[name, Tensor]``, one entry per stage, fine to coarse.

    ``out_channels`` is the last stage's channels, ``channels_list`` every stage's (FPN's
    ``in_channels_list``), ``output_shape()`` maps each name to ``(channels, stride)``.
    """

    def output_shape(self) -> dict[str, tuple[int, int]]:
        return dict(self._shapes)


def module_key(ir_key: str) -> str:
    """The compiled module's state-dict key of an IR weight key: ``node/param`` -> ``node.param``."""
    return ir_key.replace("/", ".", 1)


def compile_backbone(arch: Arch) -> Backbone:
    """Lower an Arch to a :class:`Backbone` loaded with the Arch's weights (copied, never shared)."""
    arch.verify()
    specs = arch.specs()
    root = nn.Module()
    graph = fx.Graph()
    x = graph.placeholder("x")
    env: dict[str, fx.Node] = {}
    outs: list[tuple[int, str, fx.Node]] = []
    for n in arch.nodes():
        kind = get_kind(arch.kind(n))
        if kind.role == "tap":  # taps become the graph's return value, like fx's output node
            name = arch.spec(n).name
            outs.append((specs[n].stride, name, env[arch.inputs(n)[0]]))
            continue
        with torch.device("meta"):  # no wasted random init: the Arch's tensors are assigned below
            module = kind.build(arch.spec(n))
        if module is None:
            raise ArchError(f"node {n!r}: node kind {kind.name!r} builds no module")
        root.add_module(n, module)
        args = tuple(env[i] for i in arch.inputs(n)) or (x,)
        env[n] = graph.call_module(n, args)
    outs.sort()
    graph.output(graph.call_function(OrderedDict, ([(name, node) for _, name, node in outs],)))
    body = Backbone(root, graph, class_name="SpnasBackbone")
    # clone: subnets share tensors with the blocks they copied in the IR, never in the module
    state = {module_key(k): v.clone() for k, v in arch.weights.items()}
    missing, unexpected = body.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise ArchError(f"node {key.split('.', 1)[0]!r}: builder and IR disagree on tensor {key!r}")
    shapes = {arch.spec(o).name: (specs[o].channels, specs[o].stride) for o in arch.outputs()}
    body._shapes = dict(sorted(shapes.items(), key=lambda kv: kv[1][1]))
    body.channels_list = [c for c, _ in body._shapes.values()]
    body.out_channels = body.channels_list[-1]
    return body


def lift(arch: Arch, body: nn.Module) -> Arch:
    """A copy of ``arch`` whose weights are ``body``'s (trained) tensors, keyed back by node id."""
    new = arch.clone()
    state = body.state_dict()
    seen = set()
    for k, v in state.items():
        key = k.replace(".", "/", 1)
        if key not in new.weights:
            raise ArchError(f"lift: module tensor {k!r} has no place in the Arch (node {k.split('.', 1)[0]!r})")
        if tuple(v.shape) != tuple(new.weights[key].shape):
            raise ArchError(f"lift: tensor {k!r} expected shape {tuple(new.weights[key].shape)}, got {tuple(v.shape)}")
        node, name = key.split("/", 1)
        new.set_tensors(node, {name: v.detach().to("cpu", copy=True)})
        seen.add(key)
    missing = sorted(set(new.weights) - seen)
    if missing:
        raise ArchError(f"lift: the module has no tensor for {missing[0]!r}")
    return new


_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)  # what folds into a conv: BatchNorm, SyncBatchNorm2d (a subclass), frozen


def _fold(module: nn.Module) -> None:
    """Fold every (convN, bnN) pair and Sequential(conv, bn) into one biased conv, in place (any
    normalisation of :mod:`spnas.detect.distributed`: each is a BatchNorm in eval mode)."""
    for child in module.children():
        _fold(child)
    names = dict(module.named_children())
    for name, conv in names.items():
        if isinstance(conv, nn.Conv2d):
            bn_name = "bn" + name[len("conv") :] if name.startswith("conv") else None
            bn = names.get(bn_name) if bn_name else None
            if isinstance(bn, _NORMS):
                setattr(module, name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], _NORMS):
                module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                module[i + 1] = nn.Identity()


class InferenceBackbone(nn.Module):
    """Eval-only export of a :class:`Backbone`: BN folded into the convs, run by one of three backends.

    ``eager`` is the folded module in channels-last; ``torchscript`` a traced, frozen TorchScript
    module; ``inductor`` the folded channels-last module under ``torch.compile`` with inductor's
    *freezing* (weights constant-folded and prepacked for oneDNN, ReLU and residual adds fused into
    the convolutions). Every call runs without autograd and outside inference mode: inductor only
    freezes graphs compiled with grad off, and a graph compiled under ``inference_mode`` is not frozen.
    """

    def __init__(self, body: Backbone, folded: nn.Module, backend: str) -> None:
        super().__init__()
        self.body = folded
        self.backend = backend
        self.out_channels = body.out_channels
        self.channels_list = list(body.channels_list)
        self._shapes = body.output_shape()

    def output_shape(self) -> dict[str, tuple[int, int]]:
        return dict(self._shapes)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        if self.backend != "torchscript":
            x = x.contiguous(memory_format=torch.channels_last)
        freezing = contextlib.nullcontext()
        if self.backend == "inductor":
            # imported here, not at the top: torch._inductor takes ~1.2 s to import. The patch is
            # read at (re)compile time, so a new input size is compiled frozen too.
            import torch._inductor.config as inductor_config

            freezing = inductor_config.patch(freezing=True)
        with freezing, torch.inference_mode(False), torch.no_grad():
            return OrderedDict(self.body(x))


EXPORT_BACKENDS = ("eager", "torchscript", "inductor")


def export_inference(body: Backbone, example: torch.Tensor | None = None, *, backend: str = "eager") -> InferenceBackbone:
    """A BN-folded copy of ``body`` for inference (``body`` itself is untouched).

    ``backend`` (see :class:`InferenceBackbone`): ``eager`` takes any input size; ``torchscript``
    needs ``example`` and then expects inputs of its size; ``inductor`` compiles on ``example`` when
    given (else on the first call), recompiles once per new input size, and needs a C++ compiler.
    On 2 CPU cores at batch 1 ``inductor`` is the fastest (``benchmarks/backbone_latency.py``).
    """
    if backend not in EXPORT_BACKENDS:
        raise ConfigError(f"export_inference: backend {backend!r} is not one of {', '.join(EXPORT_BACKENDS)}")
    folded = copy.deepcopy(body).eval()
    _fold(folded)
    for p in folded.parameters():
        p.requires_grad_(False)
    if backend == "eager":
        return InferenceBackbone(body, folded.to(memory_format=torch.channels_last), "eager").eval()
    if backend == "torchscript":
        if example is None:
            raise ConfigError("export_inference: backend 'torchscript' needs an example input (it traces at that size)")
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            # TorchScript is deprecated in favour of torch.compile (our 'inductor' backend); still supported
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # size-specialised: documented above
            traced = torch.jit.trace(folded, example, strict=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        return InferenceBackbone(body, frozen, "torchscript").eval()
    compiled = torch.compile(folded.to(memory_format=torch.channels_last), dynamic=False)
    out = InferenceBackbone(body, compiled, "inductor").eval()
    if example is not None:
        try:
            out(example)
        except Exception as e:  # noqa: BLE001 - any compiler failure becomes one clear line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ConfigError(
                f"export_inference: torch.compile (inductor) failed: {first[:200]}; use backend 'eager' or 'torchscript'"
            ) from e
    return out
