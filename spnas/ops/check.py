"""The checker that proves a morphism keeps the network's function.

``check(m, arch, x)`` compiles the Arch before and after the rewrite and compares every output
they share, in eval mode and in train mode on the same batch. A widened stage's output has its
channels replicated (``cat([y, y], 1)``); it is compared against the old output tiled the same way.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
import torch

from spnas.ir import Arch
from spnas.ops.registry import DEFAULT_SPACE, Morphism, Space, get_morphism

__all__ = ["check", "CheckResult", "relative_error"]


@dataclass(frozen=True)
class CheckResult:
    """Max relative error (|after - before| / max|before|) over shared outputs, per mode."""

    morphism: str
    site: Hashable
    eval_error: float
    train_error: float
    after: Arch

    @property
    def error(self) -> float:
        return max(self.eval_error, self.train_error)


def relative_error(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """Largest ``max|a - b| / max|b|`` over the outputs both have; replicated channels are tiled.

    An output that disappeared or changed shape other than by channel replication counts as ``inf``.
    """
    err = 0.0
    for k, b in before.items():
        a = after.get(k)
        if a is None:
            return float("inf")
        if a.shape != b.shape:
            if a.shape[1] % b.shape[1] or a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
                return float("inf")
            b = b.repeat(1, a.shape[1] // b.shape[1], 1, 1)
        scale = b.abs().max().item() or 1.0
        err = max(err, (a - b).abs().max().item() / scale)
    return err


def _run(arch: Arch, x: torch.Tensor, train: bool) -> dict[str, torch.Tensor]:
    from spnas.detect import compile_backbone  # the one place ops compiles (DESIGN §1)

    body = compile_backbone(arch).to(x.dtype).train(train)
    with torch.no_grad():
        return dict(body(x))


def check(
    morphism: Morphism | str,
    arch: Arch,
    x: torch.Tensor,
    site: Hashable | None = None,
    rng: np.random.Generator | None = None,
    space: Space = DEFAULT_SPACE,
) -> CheckResult:
    """Apply ``morphism`` at ``site`` (or a random site) and measure how much the outputs moved.

    The comparison runs in ``x.dtype``: float64 separates the rule's arithmetic from float32
    rounding, which train-mode BN on a tiny batch amplifies.
    """
    m = get_morphism(morphism) if isinstance(morphism, str) else morphism
    rng = rng if rng is not None else np.random.default_rng(0)
    if site is None:
        sites = m.sites(arch, space)
        if not sites:
            raise ValueError(f"morphism {m.name!r} has no site on this Arch")
        site = sites[int(rng.integers(len(sites)))]
    after = m.apply(arch, site, rng, space)
    errs = []
    for train in (False, True):
        errs.append(relative_error(_run(arch, x, train), _run(after, x, train)))
    return CheckResult(m.name, site, errs[0], errs[1], after)
