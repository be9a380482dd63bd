"""The built-in morphisms of SP-NAS (DESIGN §3) as graph rewrites.

| rule         | guarantee   | site                         | what it does |
|--------------|-------------|------------------------------|--------------|
| ``expand``     | exact       | a main-chain block id        | insert an identity block after it (last BN gamma = beta = 0) |
| ``swap``       | approximate | ``(gainer, loser)`` block ids  | move a stage boundary by 1..``space.max_shift`` blocks; strides swap, weights stay |
| ``widen``      | exact       | a ``d`` block id               | move its channel doubling one block earlier (Net2WiderNet, random split) |
| ``add_stage``  | exact       | ``"end"``                      | append a stride-2 stage; existing outputs unchanged |
| ``add_subnet`` | exact       | a stage index (0-based)      | add a parallel subnet copying the stage, zero fuse |

Node ids of surviving blocks never change, so weights and history follow the block. ``swap`` and
``widen`` act on serial nets (the parallel level comes after the serial search). The rules act on
residual blocks (kind ``block``) and leave nodes of plugin kinds on the chain where they are; stage
taps follow automatically (:class:`~spnas.ir.Arch` moves them after every edit).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from spnas.errors import MorphismError
from spnas.ir import Arch, BlockSpec, OutputSpec, add_subnet as _ir_add_subnet, get_kind
from spnas.ir.nodes import output_name
from spnas.ops.registry import Space, register_morphism
from spnas.ops.weights import identity_conv1x1, random_shares, replicate, replicate_bn, split, wider_map, zero_bn

__all__ = ["pristine"]


def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


def _serial(arch: Arch) -> bool:
    return not any(st.subnets for st in arch.stages())


def _residual(arch: Arch, node: str) -> bool:
    return arch.kind(node) == "block"


# ------------------------------------------------------------------------------------------ expand
def _expand_sites(arch: Arch, space: Space) -> list[str]:
    if len(arch.main_chain()) >= space.max_blocks:
        return []
    return [b for b in arch.main_chain() if _residual(arch, b)]


@register_morphism("expand", exact=True, sites=_expand_sites)
def expand(arch: Arch, site: str, rng: np.random.Generator) -> Arch:
    """Insert after ``site`` a stride-1 block of the same channels computing the identity.

    Its residual branch ends in a BN with gamma = beta = 0, so it adds zero; the input is >= 0 after
    the previous block's ReLU, so ``relu(x + 0) == x`` in eval and train mode.
    """
    prev = arch.spec(site)
    spec = BlockSpec(prev.block, prev.out_channels, prev.planes, 1, prev.groups, prev.base_width, prev.dilation, "identity")
    last_bn = "bn2" if spec.block == "basic" else "bn3"
    tensors = zero_bn(get_kind("block").init(spec, _gen(rng)), last_bn)
    arch.insert_after(site, "block", spec, tensors=tensors, prefix="b")
    return arch


# -------------------------------------------------------------------------------------------- swap
def _swap_sites(arch: Arch, space: Space) -> list[tuple[str, str]]:
    if not _serial(arch):
        return []
    stages = arch.stages()
    out = []
    for prev, st in zip(stages, stages[1:]):
        if not _residual(arch, st.blocks[0]):
            continue
        for k in range(1, space.max_shift + 1):
            if len(prev.blocks) > k and _residual(arch, prev.blocks[-k]):  # boundary moves left by k
                out.append((prev.blocks[-k], st.blocks[0]))
            if len(st.blocks) > k and _residual(arch, st.blocks[k]):  # boundary moves right by k
                out.append((st.blocks[k], st.blocks[0]))
    return out


def _with_stride(arch: Arch, node: str, stride: int) -> None:
    spec = arch.spec(node)
    t = arch.tensors(node)
    shortcut = spec.shortcut
    if stride == 2 and shortcut == "identity":  # a strided shortcut that subsamples exactly
        shortcut = "conv"
        t["downsample.0.weight"] = identity_conv1x1(spec.out_channels, spec.in_channels, t["conv1.weight"].dtype)
    arch.set_spec(node, dataclasses.replace(spec, stride=stride, shortcut=shortcut), t)


@register_morphism("swap", exact=False, sites=_swap_sites)
def swap(arch: Arch, site: tuple[str, str], rng: np.random.Generator) -> Arch:
    """Move a stage boundary: ``loser`` (a stage's first block) gives its stride 2 to ``gainer``; weights stay.

    ``gainer`` lies up to ``space.max_shift`` blocks before or after the boundary (paper Figure 2).

    The block that gains stride 2 and had an identity shortcut gets a 1x1 stride-2 conv shortcut
    initialised to the identity (pure subsampling). The stage taps follow the boundary by themselves.
    """
    gainer, loser = site
    _with_stride(arch, loser, 1)
    _with_stride(arch, gainer, 2)
    return arch


# ------------------------------------------------------------------------------------------- widen
def _widen_sites(arch: Arch, space: Space) -> list[str]:
    if not _serial(arch):
        return []
    chain = arch.main_chain()
    out = []
    planes = [arch.spec(b).planes if _residual(arch, b) else None for b in chain]
    for i in range(1, len(chain)):
        if planes[i] is None or planes[i - 1] is None:
            continue  # both must be residual blocks, next to each other
        j, p = arch.spec(chain[i]), arch.spec(chain[i - 1])
        if j.planes != 2 * p.planes:
            continue  # chain[i] is no 'd' block
        before = [q for q in planes[: i - 1] if q is not None]
        pp = before[-1] if before else arch.spec(arch.stem).out_channels
        if p.planes == pp and p.dilation == 1:  # chain[i-1] is a '1' block that can take the doubling
            out.append(chain[i])
    return out


def _widened_block(spec: BlockSpec, t: dict[str, torch.Tensor], gen: torch.Generator) -> tuple[BlockSpec, dict[str, torch.Tensor], torch.Tensor]:
    """Net2WiderNet on one block: planes doubled, every new channel a replica of an old one.

    Each replicated channel's outgoing weights are split in random shares (``random_shares``), so
    the replicas get different gradients and diverge under training. Returns the new spec, its
    tensors, and the shares of the block's output channels (the next block splits its inputs by them).
    """
    new = dataclasses.replace(spec, planes=spec.planes * 2, shortcut="conv" if spec.shortcut == "identity" else spec.shortcut)
    w_map = wider_map(spec.width, new.width, spec.groups)
    o_map = wider_map(spec.out_channels, new.out_channels)
    out: dict[str, torch.Tensor] = {}
    if spec.block == "basic":
        out["conv1.weight"] = replicate(t["conv1.weight"], w_map)
        out.update(replicate_bn(t, "bn1", w_map))
        out["conv2.weight"] = split(replicate(t["conv2.weight"], o_map), w_map, dim=1, shares=random_shares(w_map, gen))
        out.update(replicate_bn(t, "bn2", o_map))
    else:
        out["conv1.weight"] = replicate(t["conv1.weight"], w_map)
        out.update(replicate_bn(t, "bn1", w_map))
        local = wider_map(spec.width // spec.groups, new.width // new.groups)
        out["conv2.weight"] = split(replicate(t["conv2.weight"], w_map), local, dim=1, shares=random_shares(local, gen))
        out.update(replicate_bn(t, "bn2", w_map))
        out["conv3.weight"] = split(replicate(t["conv3.weight"], o_map), w_map, dim=1, shares=random_shares(w_map, gen))
        out.update(replicate_bn(t, "bn3", o_map))
    if spec.shortcut == "identity":
        out["downsample.0.weight"] = identity_conv1x1(new.out_channels, spec.in_channels, t["conv1.weight"].dtype)
    else:
        out["downsample.0.weight"] = replicate(t["downsample.0.weight"], o_map)
        if spec.shortcut == "conv_bn":
            out.update(replicate_bn(t, "downsample.1", o_map))
    return new, out, random_shares(o_map, gen)


def _split_inputs(spec: BlockSpec, t: dict[str, torch.Tensor], new_in: int, shares: torch.Tensor) -> tuple[BlockSpec, dict[str, torch.Tensor]]:
    """The consumer side of Net2WiderNet: inputs replicated, incoming weights split by ``shares``."""
    i_map = wider_map(spec.in_channels, new_in)
    out = dict(t)
    out["conv1.weight"] = split(t["conv1.weight"], i_map, dim=1, shares=shares)
    shortcut = spec.shortcut
    if shortcut == "identity":  # cannot happen for a 'd' block, kept for completeness
        shortcut = "conv"
        out["downsample.0.weight"] = split(identity_conv1x1(spec.out_channels, spec.in_channels), i_map, dim=1, shares=shares)
    else:
        out["downsample.0.weight"] = split(t["downsample.0.weight"], i_map, dim=1, shares=shares)
    return dataclasses.replace(spec, in_channels=new_in, shortcut=shortcut), out


@register_morphism("widen", exact=True, sites=_widen_sites)
def widen(arch: Arch, site: str, rng: np.random.Generator) -> Arch:
    """Move the channel doubling of block ``site`` to the block before it (Net2WiderNet, exact).

    If that block ends a stage, the stage's output gets twice the channels, each a replica
    (``torch.cat([y, y], 1)`` of the old output); the detector splits its FPN lateral to match.
    """
    chain = arch.main_chain()
    j = site
    i = chain[chain.index(j) - 1]
    gen = _gen(rng)
    spec_i, t_i, shares = _widened_block(arch.spec(i), arch.tensors(i), gen)
    arch.set_spec(i, spec_i, t_i)
    spec_j, t_j = _split_inputs(arch.spec(j), arch.tensors(j), spec_i.out_channels, shares)
    arch.set_spec(j, spec_j, t_j)
    return arch


# --------------------------------------------------------------------------------------- add_stage
def _add_stage_sites(arch: Arch, space: Space) -> list[str]:
    chain = arch.main_chain()
    if len(arch.stages()) >= space.max_stages or len(chain) >= space.max_blocks:
        return []
    blocks = [b for b in chain if _residual(arch, b)]
    if not blocks or arch.specs()[chain[-1]].channels != arch.spec(blocks[-1]).out_channels:
        return []  # the new block copies the last residual block; a plugin node after it must keep its channels
    return ["end"]


@register_morphism("add_stage", exact=True, sites=_add_stage_sites)
def add_stage(arch: Arch, site: str, rng: np.random.Generator) -> Arch:
    """Append a stage of one stride-2 block with the last stage's channels (code ``,1``).

    Every existing output is unchanged; the new, coarser output is new (its FPN lateral starts at
    zero in the detector). The block starts from the last block's trained weights where the shapes
    agree (else a fresh initialisation) with an exactly subsampling 1x1 shortcut.
    """
    chain = arch.main_chain()
    last = chain[-1]  # the chain's end, which may be a plugin node after the last residual block
    like = [b for b in chain if _residual(arch, b)][-1]
    prev = arch.spec(like)
    spec = BlockSpec(prev.block, prev.out_channels, prev.planes, 2, prev.groups, prev.base_width, 1, "conv")
    body = dataclasses.replace(spec, stride=1, shortcut="identity")
    shapes = get_kind("block").tensors(body)
    src = arch.tensors(like)
    if all(k in src and tuple(src[k].shape) == s for k, s in shapes.items()):
        t = {k: src[k] for k in shapes}  # shared by reference: tensors are never modified in place
    else:
        t = get_kind("block").init(body, _gen(rng))
    t["downsample.0.weight"] = identity_conv1x1(spec.out_channels, spec.in_channels)  # a subsampling shortcut
    new = arch.add_node(arch.mint_id("b"), "block", spec, [last], tensors=t)
    stride = arch.specs()[new].stride
    name = output_name(stride)
    if name in arch:
        raise MorphismError(f"add_stage: an output named {name!r} already exists")
    arch.add_node(name, "output", OutputSpec(name), [new])
    return arch


# -------------------------------------------------------------------------------------- add_subnet
def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or torch.equal(a, b)


def pristine(arch: Arch) -> bool:
    """True when every subnet is still an untrained copy: zero fuse BN, weights equal the main stage's.

    Only then are all outputs of a stage equal, which ``add_subnet`` needs to be exact.
    """
    for st in arch.stages():
        for sub in st.subnets:
            ft = arch.tensors(sub.fuse)
            if ft["bn.weight"].any() or ft["bn.bias"].any() or len(sub.blocks) != len(st.blocks):
                return False
            for b, m in zip(sub.blocks, st.blocks):
                if arch.spec(b) != arch.spec(m):
                    return False
                tb, tm = arch.tensors(b), arch.tensors(m)
                if any(not _same(tb[k], tm[k]) for k in tm if not k.endswith("num_batches_tracked")):
                    return False
    return True


def _add_subnet_sites(arch: Arch, space: Space) -> list[int]:
    if not pristine(arch):
        return []
    stages = arch.stages()
    n_blocks = len(arch.nodes_with_role("block"))
    return [
        st.index
        for st in stages
        if len(st.subnets) < space.max_subnets and n_blocks + len(st.blocks) <= space.max_blocks * (space.max_subnets + 1)
    ]


@register_morphism("add_subnet", exact=True, sites=_add_subnet_sites)
def add_subnet(arch: Arch, site: int, rng: np.random.Generator) -> Arch:
    """Add a parallel subnet to stage ``site``: ``x^k = p^k(x_prev^k + fuse(x^(k-1)))``.

    The subnet copies the stage's blocks with their weights; the fuse BN starts at zero. It applies
    only to :func:`pristine` nets (serial ones, or ones this rule grew), where it is exact; a trained
    parallel net's subnets differ, so there it offers no site.
    """
    _ir_add_subnet(arch, int(site), gen=_gen(rng))
    return arch
