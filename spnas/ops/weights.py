"""Pure tensor arithmetic of the morphisms: tensors in, tensors out, dtype kept.

Each function is small and tested alone; the graph surgery in :mod:`spnas.ops.rules` calls them.
Net2WiderNet (Chen et al. 2016) widens a layer by replicating output channels and splitting the
incoming weights of the next layer among the replicas, which keeps the function exactly. With
replicas the batch statistics of a copied channel equal the original's, so the rewrite is exact in
train mode too.
"""

from __future__ import annotations

import torch

__all__ = [
    "wider_map",
    "replicate",
    "split",
    "random_shares",
    "replicate_bn",
    "zero_bn",
    "identity_conv1x1",
]


def wider_map(old: int, new: int, groups: int = 1) -> torch.Tensor:
    """For each of ``new`` channels, the old channel it copies, keeping grouped-conv groups intact.

    Channels are split into ``groups`` equal groups; new channel ``r`` of group ``g`` copies old
    channel ``r mod (old/groups)`` of group ``g``. With ``groups=1`` this is ``arange(new) % old``.

    >>> wider_map(2, 4).tolist()
    [0, 1, 0, 1]
    >>> wider_map(4, 8, groups=2).tolist()
    [0, 1, 0, 1, 2, 3, 2, 3]
    """
    if old % groups or new % groups or new < old:
        raise ValueError(f"expected old and new divisible by groups={groups} and new >= old, got {old} -> {new}")
    s_old, s_new = old // groups, new // groups
    r = torch.arange(s_new) % s_old
    return torch.cat([g * s_old + r for g in range(groups)])


def replicate(t: torch.Tensor, mapping: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``t`` with index ``i`` along ``dim`` taken from ``mapping[i]`` (output channels of a conv, BN vectors)."""
    return t.index_select(dim, mapping.to(t.device))


def split(t: torch.Tensor, mapping: torch.Tensor, dim: int = 1, shares: torch.Tensor | None = None) -> torch.Tensor:
    """Replicate along ``dim`` and give each copy its share of the weight (a conv's inputs).

    ``shares[i]`` is new channel ``i``'s fraction of old channel ``mapping[i]``; the shares of one old
    channel sum to 1, so with inputs replicated by ``mapping``, ``conv(x_new, split(W)) ==
    conv(x_old, W)``. Without ``shares`` each of ``n`` replicas gets ``1/n`` (Net2WiderNet's split),
    which leaves the replicas with identical gradients forever: use :func:`random_shares`.
    """
    if shares is None:
        counts = torch.bincount(mapping).to(t.dtype)
        shares = 1.0 / counts[mapping]
    shape = [1] * t.dim()
    shape[dim] = -1
    return t.index_select(dim, mapping.to(t.device)) * shares.to(t.dtype).to(t.device).view(shape)


def random_shares(mapping: torch.Tensor, gen: torch.Generator, low: float = 0.25) -> torch.Tensor:
    """Per new channel, a random share of its old channel; the shares of one old channel sum to 1.

    A channel copied twice gets ``(a, 1 - a)`` with ``a`` uniform in ``[low, 1 - low]``; more copies get
    positive weights normalised to sum 1. Unequal shares give the replicas different gradients, so
    they diverge under training and the widening adds capacity, while the rewrite stays exact: the
    shares are multiples of 2**-12, so a float32 weight times a share is exact in float64 and the
    replicas' parts add back to the weight. Stored as float32 (a net's weights), each part is
    rounded once, a relative change of at most 2**-24 per weight: the widened net's outputs move by
    about 1e-7 of their scale, the float32 rounding any rewrite of weights has.

    >>> m = wider_map(2, 4)
    >>> s = random_shares(m, torch.Generator().manual_seed(0))
    >>> torch.allclose(torch.zeros(2).index_add_(0, m, s), torch.ones(2))
    True
    """
    raw = low + (1 - 2 * low) * torch.rand(len(mapping), generator=gen, dtype=torch.float64)
    total = torch.zeros(int(mapping.max()) + 1, dtype=torch.float64).index_add_(0, mapping, raw)
    # multiples of 2**-12: every share is exact in any float dtype, and so is 1 - (the others)
    shares = torch.round(raw / total[mapping] * _QUANTUM) / _QUANTUM
    last = torch.zeros(len(total), dtype=torch.long)
    last[mapping] = torch.arange(len(mapping))  # the last replica of each old channel takes the remainder
    others = torch.zeros_like(total).index_add_(0, mapping, shares) - shares[last]
    shares[last] = 1.0 - others
    return shares


_QUANTUM = 4096.0


def replicate_bn(tensors: dict[str, torch.Tensor], prefix: str, mapping: torch.Tensor) -> dict[str, torch.Tensor]:
    """Replicate a BatchNorm's affine parameters and running statistics by ``mapping``."""
    out = {}
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        out[f"{prefix}.{leaf}"] = replicate(tensors[f"{prefix}.{leaf}"], mapping)
    out[f"{prefix}.num_batches_tracked"] = tensors[f"{prefix}.num_batches_tracked"].clone()
    return out


def zero_bn(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A BatchNorm with gamma = beta = 0: it outputs zeros in eval and train mode alike."""
    out = dict(tensors)
    out[f"{prefix}.weight"] = torch.zeros_like(tensors[f"{prefix}.weight"])
    out[f"{prefix}.bias"] = torch.zeros_like(tensors[f"{prefix}.bias"])
    return out


def identity_conv1x1(out_channels: int, in_channels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A 1x1 conv weight copying input channel ``o mod in_channels`` to output ``o`` (identity or tiling)."""
    w = torch.zeros(out_channels, in_channels, 1, 1, dtype=dtype)
    w[torch.arange(out_channels), torch.arange(out_channels) % in_channels] = 1.0
    return w
