"""Building an :class:`Arch` from the paper's code, and the parallel level's ``add_subnet``.

:mod:`spnas.ir.encoding` reads and writes code strings; this module turns a decoded code into a
graph with seeded weights. Imports run one way: ``build`` -> ``arch`` -> ``encoding``.
"""

from __future__ import annotations

import torch

from spnas.errors import ArchError
from spnas.ir.arch import Arch
from spnas.ir.encoding import BASE_PLANES, Code, decode
from spnas.ir.nodes import AddSpec, BlockSpec, FuseSpec, OutputSpec, StemSpec, output_name

__all__ = ["build", "parse", "add_subnet"]


def build(code: Code, *, stem: str = "resnet", seed: int = 0) -> Arch:
    """Build an :class:`Arch` for a decoded code, weights initialised from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    arch = Arch()
    prev = arch.add_node("stem", "stem", StemSpec(style=stem, out_channels=BASE_PLANES), gen=gen)
    in_ch, planes = BASE_PLANES, BASE_PLANES
    bid = 0
    last_of_stage = []
    for si, st in enumerate(code.stages):
        for bi, ch in enumerate(st):
            s = 2 if (bi == 0 and si > 0) else 1
            if ch == "d":
                planes *= 2
            out = planes * (1 if code.block == "basic" else 4)
            shortcut = "conv_bn" if (s != 1 or in_ch != out) else "identity"
            spec = BlockSpec(code.block, in_ch, planes, s, code.groups, code.base_width, 1, shortcut)
            prev = arch.add_node(f"b{bid}", "block", spec, [prev], gen=gen)
            bid += 1
            in_ch = out
        last_of_stage.append(prev)
    for si, last in enumerate(last_of_stage):
        name = output_name(4 << si)
        arch.add_node(name, "output", OutputSpec(name), [last])
    arch.reserve_ids(bid)
    for si, k in enumerate(code.parallel):
        for _ in range(k):
            add_subnet(arch, si, gen=gen)
    return arch


def add_subnet(arch: Arch, stage: int, *, gen: torch.Generator | None = None) -> list[str]:
    """Add one parallel subnet to ``stage`` (0-based) in place; return the new node ids.

    The subnet copies the stage's main blocks with their weights and computes
    ``x^k = p^k(x_prev^min(k, K_prev) + fuse(x^(k-1)))``; the fuse BN starts at gamma = beta = 0, so
    while the stage's outputs are copies of each other the network computes exactly what it did.
    The stage's tap moves to the new last output, and the next stage's subnets that index past the
    old count are rewired to it. A subnet of the first stage takes the stem's output as ``x_prev``.
    """
    stages = arch.stages()
    if not 0 <= stage < len(stages):
        raise ArchError(f"stage index: expected 0..{len(stages) - 1}, got {stage}")
    st = stages[stage]
    prev_outputs = stages[stage - 1].outputs if stage > 0 else [arch.stem]  # the first stage fuses into the stem's output
    k = len(st.subnets) + 1
    src_in = prev_outputs[min(k, len(prev_outputs) - 1)]
    top = st.outputs[-1]
    top_spec = arch.specs()
    fuse_spec = FuseSpec(top_spec[top].channels, top_spec[src_in].channels)
    fuse = arch.add_node(arch.mint_id("fuse"), "fuse", fuse_spec, [top], gen=gen)
    add = arch.add_node(arch.mint_id("add"), "add", AddSpec(fuse_spec.out_channels), [src_in, fuse])
    cur = add
    new = [fuse, add]
    for b in st.blocks:
        kind = arch.kind(b)  # a plugin kind on the stage's chain is copied like a block
        cur = arch.add_node(arch.mint_id("b" if kind == "block" else kind), kind, arch.spec(b), [cur], tensors=arch.tensors(b))
        new.append(cur)
    if st.tap is not None:
        arch.set_input(st.tap, 0, cur)
    if stage + 1 < len(stages):
        for j, sub in enumerate(stages[stage + 1].subnets, start=1):
            if j >= k:
                arch.set_input(sub.add, 0, cur)
    return new


def parse(s: str, *, stem: str = "resnet", seed: int = 0) -> Arch:
    """Build the Arch of a code string, weights initialised from ``seed``.

    >>> parse("BB(11,d1,d1,d1)").params()   # ResNet-18 without its classifier
    11176512
    """
    return build(decode(s), stem=stem, seed=seed)


