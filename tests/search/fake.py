"""A formula-driven evaluator with the real one's contract: no training, metrics from a formula.

"Training" adds the scheme's epochs to a counter tensor in the stem (``bn1.num_batches_tracked``),
so a candidate's weights remember how long its line has trained, and the metric is

    quality(architecture) + per_epoch * epochs trained along the line + noise(seed)

(or ``curve(epochs)`` in place of the linear term: a learning curve that flattens).

The quality is a parameter, so a test decides which architectures are better; ``per_epoch`` is the
gain that longer training alone buys, which an unfair acceptance rule mistakes for a better
architecture. A reignite subtracts ``reignite_cost`` from its line (pre-training moves the detector's weights).
"""

from __future__ import annotations

import errno
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from spnas.ir import Arch, load, save
from spnas.ir.io import sha256_file
from spnas.search.evaluator import HEAD_FILE
from spnas.search.records import EvalRequest, EvalResult, Outcome

COUNTER = "stem/bn1.num_batches_tracked"
PENALTY = "stem/bn1.running_mean"


def blocks_and_subnets(arch: Arch) -> float:
    """A quality that rewards depth and parallel subnets."""
    return 0.01 * len(arch.main_chain()) + 0.005 * sum(len(st.subnets) for st in arch.stages())


def flat(arch: Arch) -> float:
    """Every architecture is as good as every other: only training moves the metric."""
    return 0.0


class FakeEvaluator:
    def __init__(self, quality: Callable[[Arch], float] = blocks_and_subnets, *, per_epoch: float = 0.001,
                 noise: float = 1e-4, reignite_cost: float = 0.0, fail: dict[str, str] | None = None,
                 curve: Callable[[int], float] | None = None) -> None:
        self.quality, self.per_epoch, self.noise, self.reignite_cost = quality, per_epoch, noise, reignite_cost
        self.curve = curve  # what the line's epochs add (a learning curve; None: per_epoch x epochs)
        self.requests: dict[str, EvalRequest] = {}  # the last request of each id: its seed, epochs, ...
        self.fail = fail or {}
        self.calls: list[str] = []

    def __call__(self, req: EvalRequest) -> EvalResult:
        self.calls.append(req.id)
        self.requests[req.id] = req
        fault = self.fail.get(req.id)
        if fault == "raise":
            raise RuntimeError("injected fault")
        if fault == "oom" or (fault == "oom-above-2" and req.train.batch_size > 2):  # a device that holds 2 images
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (injected, batch {req.train.batch_size})")
        if fault == "disk" or (fault == "disk-once" and self.calls.count(req.id) == 1):
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        d = Path(req.dir)
        arch = load(d / "input")
        w = dict(arch.weights)
        w[COUNTER] = w[COUNTER] + req.train.epochs
        if req.reignite:  # the cost stays with the line: its weights remember it (stem BN mean, 0 at init)
            w[PENALTY] = w[PENALTY].clone()
            w[PENALTY][0] -= self.reignite_cost
        arch = arch.with_weights(w)
        save(arch, d / "trained")
        save_file({"roi_heads.fake": torch.zeros(1)}, str(d / HEAD_FILE))
        epochs = int(w[COUNTER])
        jitter = self.noise * ((zlib.crc32(str(req.seed).encode()) % 1000) / 1000 - 0.5)
        gain = self.curve(epochs) if self.curve is not None else self.per_epoch * epochs
        metric = self.quality(arch) + gain + jitter + float(w[PENALTY][0])
        if self.fail.get(req.id) == "nan":
            return EvalResult.failure(req.id, Outcome.CANDIDATE, "non-finite loss (injected)", "diverged", 0.0)
        return EvalResult(req.id, Outcome.OK, metric=metric, metrics={req.metric: metric}, seconds=0.01,
                          weights=str((d / "trained" / "weights.safetensors").relative_to(d.parent.parent)),
                          sha256=sha256_file(d / "trained" / "weights.safetensors"), epochs_trained=epochs)
