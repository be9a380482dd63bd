"""One candidate on many devices: data-parallel training helpers (torch.distributed), normalisation
for small per-device batches, and random draws that do not depend on how a batch is split.

A training step takes a *global batch* of ``batch_size x ranks x accumulate`` images (``batch_size``
per device and micro-step). Rank ``r`` takes, at micro-step ``j``, the images at positions
``(j * ranks + r) * batch_size ...`` of the global batch, so 2 ranks x 2 images see what 1 rank x 4
images sees, split in two. Every random draw inside a step is keyed by the image's position in the
global batch (:class:`KeyedSampler`) or by the step (multi-scale), never by the rank's own stream, so
the split does not change the draws either; with ``frozen`` or ``sync`` normalisation and the per-image
quotas of the RPN and RoI samplers filled, 2 x 2 then trains as 1 x 4 up to float rounding
(``tests/detect/test_distributed.py``).

Normalisation (``detector.options.norm``), as the references offer it for one or two images per device:

- ``bn``: BatchNorm with each device's batch statistics (the default; what a single device does);
- ``frozen``: torchvision's ``FrozenBatchNorm2d`` (statistics and affine fixed at the inherited values;
  detectron2's default for detection backbones, mmdetection's ``norm_eval``);
- ``sync``: synchronised BatchNorm, statistics over every rank's images (:class:`SyncBatchNorm2d`:
  two-pass statistics through ``torch.distributed.nn`` collectives, on gloo and NCCL alike).

Each keeps BatchNorm's tensor names (``num_batches_tracked`` too), so the IR, ``lift`` and export
see a BatchNorm whichever trained it, and every morphism stays exact.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.ops.misc import FrozenBatchNorm2d as _TVFrozen

__all__ = ["NORMS", "FrozenBatchNorm2d", "SyncBatchNorm2d", "set_norm", "KeyedSampler", "keyed", "unkeyed", "for_export", "set_keys",
           "world", "free_port", "process_group"]

NORMS = ("bn", "frozen", "sync")


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def free_port() -> int:
    """A TCP port free on this machine now (for a process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def process_group(rank: int, ranks: int, address: str, device: str) -> Iterator[None]:
    """This process as rank ``rank`` of ``ranks`` (rendezvous at ``address``, ``host:port``; NCCL for a CUDA
    ``device``, gloo otherwise) for the block; the group is destroyed after it, whatever happens."""
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", init_method=f"tcp://{address}", rank=rank,
                            world_size=ranks, timeout=datetime.timedelta(hours=2))
    try:
        yield
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------ normalisation
class FrozenBatchNorm2d(_TVFrozen):
    """torchvision's ``FrozenBatchNorm2d`` (fixed statistics and affine) that keeps ``num_batches_tracked``,
    so its state is a BatchNorm's, name for name."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are over every rank's images: the mean by one all-reduce, the
    variance by a second (two-pass, as BatchNorm computes it), both differentiable
    (``torch.distributed.nn``), on any backend; alone, the same arithmetic without the all-reduces; in
    eval mode it is BatchNorm. (torch's ``nn.SyncBatchNorm`` refuses CPU modules under DistributedDataParallel.)"""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        _, size = world()
        total = (lambda t: all_reduce(t)) if size > 1 else (lambda t: t)
        # sums in float64: the statistics then do not depend on how the images are split between ranks
        # (the order of the additions), so 2 ranks x 2 images normalise exactly as 1 rank x 4
        c = x.shape[1]
        n = total(torch.tensor([float(x.numel() // c)], dtype=torch.float64, device=x.device))
        mean = (total(x.sum(dim=(0, 2, 3), dtype=torch.float64)) / n).to(x.dtype)
        centred = x - mean.view(1, c, 1, 1)
        var = (total((centred * centred).sum(dim=(0, 2, 3), dtype=torch.float64)) / n).to(x.dtype)
        with torch.no_grad():
            m = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * float(n / (n - 1).clamp(min=1)), alpha=m)
            self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var + self.eps).view(1, c, 1, 1)
        return y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)


def set_norm(model: nn.Module, norm: str) -> nn.Module:
    """Replace every ``BatchNorm2d`` of ``model`` by ``norm``'s module, with the same tensors (in place)."""
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {list(NORMS)}, got {norm!r}")
    if norm == "bn":
        return model
    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            if norm == "frozen":
                new: nn.Module = FrozenBatchNorm2d(child.num_features, child.eps)
            else:
                new = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.to(child.weight.device)
            setattr(model, name, new)
        else:
            set_norm(child, norm)
    return model


# ------------------------------------------------------------------------------- keyed random draws
class KeyedSampler(det_utils.BalancedPositiveNegativeSampler):
    """The RPN's and RoI heads' positive/negative sampler (same quotas), drawing each image's sample from a
    generator seeded by that image's key (its place in the global batch) and the call's number within the
    step: the same image samples the same anchors and proposals whichever rank or batch it is in. Without
    keys it draws as torchvision's does."""

    def __init__(self, batch_size_per_image: int, positive_fraction: float) -> None:
        super().__init__(batch_size_per_image, positive_fraction)
        self.keys: list[int] | None = None
        self.calls = 0

    def __call__(self, matched_idxs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        if self.keys is None or len(self.keys) != len(matched_idxs):
            return super().__call__(matched_idxs)
        call, self.calls = self.calls, self.calls + 1
        pos_idx, neg_idx = [], []
        for key, m in zip(self.keys, matched_idxs):
            g = torch.Generator().manual_seed((key * 1_000_003 + call) % (2**63 - 1))
            positive = torch.where(m >= 1)[0]
            negative = torch.where(m == 0)[0]
            n_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            n_neg = min(negative.numel(), self.batch_size_per_image - n_pos)
            pick_pos = positive[torch.randperm(positive.numel(), generator=g)[:n_pos].to(m.device)]
            pick_neg = negative[torch.randperm(negative.numel(), generator=g)[:n_neg].to(m.device)]
            pos_mask = torch.zeros_like(m, dtype=torch.uint8)
            neg_mask = torch.zeros_like(m, dtype=torch.uint8)
            pos_mask[pick_pos] = 1
            neg_mask[pick_neg] = 1
            pos_idx.append(pos_mask)
            neg_idx.append(neg_mask)
        return pos_idx, neg_idx


def keyed(model: nn.Module) -> list[KeyedSampler]:
    """Give every positive/negative sampler of ``model`` (RPN, RoI heads, cascade) keyed draws; returns them."""
    out = []
    for m in model.modules():
        s = getattr(m, "fg_bg_sampler", None)
        if isinstance(s, det_utils.BalancedPositiveNegativeSampler):
            if not isinstance(s, KeyedSampler):
                s = KeyedSampler(s.batch_size_per_image, s.positive_fraction)
                m.fg_bg_sampler = s
            out.append(s)
    return out


def unkeyed(model: nn.Module) -> nn.Module:
    """Give ``model`` back torchvision's own samplers (what training put in is Python-only: TorchScript
    cannot compile it); in place."""
    for m in model.modules():
        s = getattr(m, "fg_bg_sampler", None)
        if isinstance(s, KeyedSampler):
            m.fg_bg_sampler = det_utils.BalancedPositiveNegativeSampler(s.batch_size_per_image, s.positive_fraction)
    return model


def for_export(model: nn.Module) -> nn.Module:
    """``model`` with plain modules where training used its own: torchvision's samplers, and BatchNorm in place of
    :class:`SyncBatchNorm2d` (the same in eval mode); in place. ``FrozenBatchNorm2d`` scripts as it is."""
    unkeyed(model)
    for name, child in list(model.named_children()):
        if isinstance(child, SyncBatchNorm2d):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(model, name, bn.to(child.weight.device).train(child.training))
        else:
            for_export(child)
    return model


def set_keys(samplers: list[KeyedSampler], keys: list[int] | None) -> None:
    """The keys of the images of the next forward pass (one per image, in the batch's order)."""
    for s in samplers:
        s.keys, s.calls = keys, 0


def step_key(seed: int, step: int, position: int) -> int:
    """A draw's key: the run's seed, the optimizer step, the image's position in the global batch."""
    return (seed * 2_147_483_647 + step) * 65_536 + position


def describe(ranks: int, batch: int, accumulate: int, norm: str) -> dict[str, Any]:
    """What a result journals about how it trained."""
    return {"ranks": ranks, "batch_per_device": batch, "accumulate": accumulate, "norm": norm, "global_batch": ranks * batch * accumulate}
