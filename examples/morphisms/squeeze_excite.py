"""A rule that brings its own block: squeeze-and-excitation after a residual block (Hu et al., CVPR 2018).

This one file adds a node kind (``se``) and the exact rule that inserts it (``add_se``); spnas is
not edited. Name the file in a search config and the rule among the morphisms::

    search:
      plugins: [examples/morphisms/squeeze_excite.py]
      morphisms: [expand, swap, widen, add_stage, add_se]

The block gates each channel: ``y = x * 2 * sigmoid(excite(relu(squeeze(mean(x)))))``. Its gate is
scaled by 2 so that an excitation of zero is the identity: ``2 * sigmoid(0) = 1`` exactly in floating
point, so a fresh block whose ``excite`` weights and bias are zero returns ``x`` bit for bit, in eval
and in train mode (it has no BatchNorm). Training moves ``excite`` away from zero (its gradient is
not zero), and the block starts to gate. The walk-through is in docs/writing-a-morphism.md.
"""

from dataclasses import dataclass

import torch
from torch import nn

from spnas.errors import ArchError
from spnas.ir import register_kind
from spnas.ops import register_morphism


@dataclass(frozen=True)
class SESpec:
    """``channels`` in and out; the squeeze has ``max(1, channels // reduction)`` channels."""

    channels: int
    reduction: int = 16

    def __post_init__(self):
        for f in ("channels", "reduction"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1_000_000:
                raise ArchError(f"se {f}: expected an int in 1..1000000, got {v!r}")


def zero_excitation(spec, tensors):
    """A fresh ``se`` node computes the identity: its excitation starts at zero."""
    tensors["excite.weight"] = torch.zeros_like(tensors["excite.weight"])
    tensors["excite.bias"] = torch.zeros_like(tensors["excite.bias"])
    return tensors


@register_kind("se", spec=SESpec, role="block", init=zero_excitation)
class SqueezeExcite(nn.Module):
    """The module is the whole statement of the kind: spnas reads its tensors and MACs off it."""

    def __init__(self, spec: SESpec):
        super().__init__()
        hidden = max(1, spec.channels // spec.reduction)
        self.squeeze = nn.Conv2d(spec.channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, spec.channels, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * (2.0 * torch.sigmoid(self.excite(torch.relu(self.squeeze(s)))))


def se_sites(arch, space):
    """Residual blocks of the main chain that no ``se`` follows yet, while the chain is below the bound."""
    chain = arch.main_chain()
    if len(chain) >= space.max_blocks:
        return []
    return [b for b in chain if arch.kind(b) == "block" and not any(arch.kind(u) == "se" for u in arch.users(b))]


@register_morphism("add_se", exact=True, sites=se_sites)
def add_se(arch, site, rng):
    """Insert an identity ``se`` block after ``site``; whatever read ``site`` reads it (taps included)."""
    channels = arch.specs()[site].channels
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
    arch.insert_after(site, "se", SESpec(channels), gen=gen)
    return arch
