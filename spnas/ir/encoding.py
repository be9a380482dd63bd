"""The paper's architecture code: ``BNB(111,d111,d11111,d11)`` and the parallel code ``(0,2,1,3)``.

Grammar::

    code     := type '(' stage (',' stage)* ')' [ '(' count (',' count)* ')' ]
    type     := 'BB' | 'BNB' | 'XB' [ groups 'x' width 'd' ]     # XB alone is 32x4d
    stage    := ('1' | 'd')+

``1`` is a block keeping the channels, ``d`` one that doubles the base channels; the first block of
every stage but the first has stride 2; the stem brings the image to 1/4. A parallel code gives the
number of extra subnets per stage and is written only when one is non-zero.
``encode(parse(s)) == s`` for every valid ``s``; an invalid one raises :class:`EncodingError` naming
the position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from spnas.errors import ArchError, EncodingError
from spnas.ir.arch import Arch, output_name
from spnas.ir.nodes import AddSpec, BlockSpec, FuseSpec, OutputSpec, StemSpec

__all__ = ["Code", "decode", "parse", "encode", "build", "add_subnet", "MAX_PLANES", "MAX_BLOCKS"]

BASE_PLANES = 64
MAX_PLANES = 2048  # five doublings of 64: far past any detection backbone
MAX_BLOCKS = 200
MAX_STAGES = 12
MAX_SUBNETS = 9


@dataclass(frozen=True)
class Code:
    """A decoded code: block family, per-stage ``'1'``/``'d'`` strings, subnets per stage."""

    block: str  # "basic" | "bottleneck"
    groups: int
    base_width: int
    stages: tuple[str, ...]
    parallel: tuple[int, ...]

    @property
    def prefix(self) -> str:
        if self.block == "basic":
            return "BB"
        if self.groups == 1 and self.base_width == 64:
            return "BNB"
        if (self.groups, self.base_width) == (32, 4):
            return "XB"
        return f"XB{self.groups}x{self.base_width}d"

    def __str__(self) -> str:
        s = f"{self.prefix}({','.join(self.stages)})"
        if any(self.parallel):
            s += "(" + ",".join(map(str, self.parallel)) + ")"
        return s


_TYPE = re.compile(r"(BNB|BB|XB)(?:(\d+)x(\d+)d)?")


def _fail(s: str, pos: int, msg: str) -> EncodingError:
    return EncodingError(f"at position {pos} of {s!r}: {msg}")


def decode(s: str) -> Code:
    """Parse a code string into a :class:`Code`, without building anything."""
    if not isinstance(s, str):
        raise EncodingError(f"expected a code string, got {type(s).__name__}")
    m = _TYPE.match(s)
    if not m:
        raise _fail(s, 0, "expected a block type BB, BNB or XB")
    t, g, w = m.groups()
    pos = m.end()
    if t == "XB":
        groups, width = (int(g), int(w)) if g else (32, 4)
        if g and (groups, width) == (32, 4):
            raise _fail(s, 2, "write XB for 32x4d, the canonical form")
        if g and (groups, width) == (1, 64):
            raise _fail(s, 2, "write BNB for 1x64d, the canonical form")
        if not (1 <= groups <= 256 and 1 <= width <= 512) or (g and (g.startswith("0") or w.startswith("0"))):
            raise _fail(s, 2, f"expected groups in 1..256 and width in 1..512 without leading zeros, got {g}x{w}d")
    elif g:
        raise _fail(s, len(t), f"only XB takes groups x width, got {t}{g}x{w}d")
    else:
        groups, width = 1, 64
    block = "basic" if t == "BB" else "bottleneck"
    if pos >= len(s) or s[pos] != "(":
        raise _fail(s, pos, f"expected '(', got {s[pos]!r}" if pos < len(s) else "expected '(', got the end")
    pos += 1
    stages: list[str] = []
    cur = ""
    while True:
        if pos >= len(s):
            raise _fail(s, pos, "expected ')' to close the stages, got the end")
        c = s[pos]
        if c in "1d":
            cur += c
        elif c in ",)":
            if not cur:
                raise _fail(s, pos, f"expected a stage of '1'/'d' before {c!r}, got an empty stage")
            stages.append(cur)
            cur = ""
            if c == ")":
                pos += 1
                break
        else:
            raise _fail(s, pos, f"expected '1', 'd', ',' or ')', got {c!r}")
        pos += 1
    nblocks = sum(map(len, stages))
    if nblocks > MAX_BLOCKS or len(stages) > MAX_STAGES:
        raise _fail(s, pos - 1, f"expected at most {MAX_BLOCKS} blocks in {MAX_STAGES} stages, got {nblocks} in {len(stages)}")
    doublings = sum(st.count("d") for st in stages)
    if BASE_PLANES << doublings > MAX_PLANES:
        allowed = (MAX_PLANES // BASE_PLANES).bit_length() - 1
        culprit = [i for i, c in enumerate(s) if c == "d" and i > m.end()][allowed]
        raise _fail(s, culprit, f"expected base channels <= {MAX_PLANES}, this 'd' makes {MAX_PLANES * 2}")
    parallel = [0] * len(stages)
    if pos < len(s):
        start = pos
        m2 = re.compile(r"\((\d+(?:,\d+)*)\)").match(s, pos)
        if not m2:
            raise _fail(s, pos, "expected a parallel code like (0,1,0,2) after the stages")
        counts = m2.group(1).split(",")
        if len(counts) != len(stages):
            raise _fail(s, start, f"expected {len(stages)} subnet counts, one per stage, got {len(counts)}")
        for i, c in enumerate(counts):
            if len(c) > 1 and c.startswith("0") or int(c) > MAX_SUBNETS:
                raise _fail(s, start + 1 + sum(len(x) + 1 for x in counts[:i]), f"expected a count in 0..{MAX_SUBNETS}, got {c}")
        parallel = [int(c) for c in counts]
        if not any(parallel):
            raise _fail(s, start, "an all-zero parallel code is written by leaving it out")
        pos = m2.end()
        if pos < len(s):
            raise _fail(s, pos, f"expected the end, got {s[pos:]!r}")
    return Code(block, groups, width, tuple(stages), tuple(parallel))


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
    arch.next_id = bid
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
    old count are rewired to it.
    """
    stages = arch.stages()
    if not 0 <= stage < len(stages):
        raise ArchError(f"stage index: expected 0..{len(stages) - 1}, got {stage}")
    if stage == 0:
        raise ArchError("stage 1 has no previous stage to fuse into; subnets start at stage 2")
    st, prev = stages[stage], stages[stage - 1]
    k = len(st.subnets) + 1
    src_in = prev.outputs[min(k, len(prev.outputs) - 1)]
    top = st.outputs[-1]
    top_spec = arch.specs()
    fuse_spec = FuseSpec(top_spec[top].channels, top_spec[src_in].channels)
    fuse = arch.add_node(arch.mint_id("fuse"), "fuse", fuse_spec, [top], gen=gen)
    add = arch.add_node(arch.mint_id("add"), "add", AddSpec(fuse_spec.out_channels), [src_in, fuse])
    cur = add
    new = [fuse, add]
    for b in st.blocks:
        cur = arch.add_node(arch.mint_id("b"), "block", arch.spec(b), [cur], tensors=arch.tensors(b))
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


def encode(arch: Arch) -> str:
    """The code of an Arch; raises ArchError when the Arch has no code (mixed blocks, odd widths)."""
    stages = arch.stages()
    first = arch.spec(stages[0].blocks[0])
    planes = BASE_PLANES
    out: list[str] = []
    for st in stages:
        s = ""
        for b in st.blocks:
            spec = arch.spec(b)
            if (spec.block, spec.groups, spec.base_width) != (first.block, first.groups, first.base_width):
                raise ArchError(f"node {b!r}: mixed block types have no code")
            if spec.planes == planes * 2:
                s += "d"
                planes *= 2
            elif spec.planes == planes:
                s += "1"
            else:
                raise ArchError(f"node {b!r}: expected {planes} or {planes * 2} base channels for a code, got {spec.planes}")
        out.append(s)
    code = Code(first.block, first.groups, first.base_width, tuple(out), tuple(len(st.subnets) for st in stages))
    return str(code)
