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
from typing import TYPE_CHECKING

from spnas.errors import ArchError, EncodingError

if TYPE_CHECKING:  # the codec reads an Arch through its methods; it never builds one (see spnas.ir.build)
    from spnas.ir.arch import Arch

__all__ = ["Code", "decode", "encode", "describe", "BASE_PLANES", "MAX_PLANES", "MAX_BLOCKS"]

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
    if s.startswith("~"):
        raise _fail(s, 0, "a custom encoding (it starts with '~') describes a net with kinds the paper's grammar "
                          "cannot express; it names no architecture: load the net's IR directory (start.ir) instead")
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


def encode(arch: "Arch") -> str:
    """The code of an Arch; raises ArchError when the Arch has no code (mixed blocks, odd widths, other kinds)."""
    stages = arch.stages()
    for n in arch.nodes():
        if arch.kind(n) not in _PAPER_KINDS:
            raise ArchError(f"node {n!r}: kind {arch.kind(n)!r} has no code in the paper's grammar")
    first = arch.spec(stages[0].blocks[0])
    out = _stage_strings(arch, stages, first, strict=True)
    code = Code(first.block, first.groups, first.base_width, tuple(out), tuple(len(st.subnets) for st in stages))
    return str(code)


_PAPER_KINDS = ("stem", "block", "fuse", "add", "output")


def _stage_strings(arch: "Arch", stages: list, first: object, *, strict: bool) -> list[str]:
    """Each stage's ``1``/``d`` string, base channels followed from 64. ``strict`` (``encode``): a block the
    grammar cannot write raises; otherwise (``describe``) it reads ``[kind]``, or ``[block]`` for an odd block."""
    planes = BASE_PLANES
    out = []
    for st in stages:
        s = ""
        for b in st.blocks:
            spec = arch.spec(b)
            if arch.kind(b) != "block":
                s += f"[{arch.kind(b)}]"  # encode refused every other kind before it got here
                continue
            if (spec.block, spec.groups, spec.base_width) != (first.block, first.groups, first.base_width):
                if strict:
                    raise ArchError(f"node {b!r}: mixed block types have no code")
                s += "[block]"
            elif spec.planes == planes * 2:
                s += "d"
                planes *= 2
            elif spec.planes == planes:
                s += "1"
            elif strict:
                raise ArchError(f"node {b!r}: expected {planes} or {planes * 2} base channels for a code, got {spec.planes}")
            else:
                s += "[block]"
        out.append(s)
    return out


def describe(arch: "Arch") -> str:
    """A custom encoding for a net the grammar cannot express: ``~`` then the paper's notation.

    Residual blocks read as in the paper (``1``/``d`` from their base channels); a node of another
    kind reads ``[kind]`` where it sits on its stage's chain; block types that differ read
    ``[block]``. Subnet counts follow as in the paper. It names no architecture by itself (the IR
    file does): :func:`decode` refuses it.
    """
    try:
        stages = arch.stages()
    except ArchError:
        return f"~<{arch.fingerprint()}>"
    blocks = [b for st in stages for b in st.blocks if arch.kind(b) == "block"]
    if not blocks:
        return f"~<{arch.fingerprint()}>"
    first = arch.spec(blocks[0])
    prefix = Code(first.block, first.groups, first.base_width, (), ()).prefix
    out = _stage_strings(arch, stages, first, strict=False)
    counts = [len(st.subnets) for st in stages]
    return f"~{prefix}({','.join(out)})" + (f"({','.join(map(str, counts))})" if any(counts) else "")
