"""Training and evaluation of a detector: the paper's fast and full schemes (§4.1).

Fast scheme: SGD (momentum 0.9, weight decay 1e-4), cosine learning rate from ``base_lr`` to
``min_lr`` (both scaled linearly to the batch, quoted at batch 16), linear warm-up, horizontal
flip, 3 epochs. Full scheme: 24 epochs, step decay x0.1 at 2/3 and 11/12 of training. AMP on
CUDA. A non-finite loss stops training with :class:`EvalError` saying where.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, Field, StrictInt, create_model
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from spnas.detect.data import AugmentSampler, DetectionDataset, collate
from spnas.detect.metrics import LAMR_METRICS, citypersons_lamr, coco_evaluate, detections_to_coco, ecp_lamr, voc_eval
from spnas.errors import EvalError, SpnasError
from spnas.ir.io import write_tensors
from spnas.schema import Bool, Float, Section

__all__ = ["TrainConfig", "TrainSection", "checked_config", "FAST", "FULL", "train_detector", "evaluate", "save_checkpoint", "load_checkpoint", "TrainResult"]


@dataclass(frozen=True)
class TrainConfig:
    """A training schedule; :data:`FAST` and :data:`FULL` are the paper's two."""

    epochs: int = 3
    batch_size: int = 2
    base_lr: float = 0.02
    min_lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # or "step"
    steps: tuple[float, ...] = (2 / 3, 11 / 12)
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    flip: bool = True
    amp: bool = True
    eval_every: int = 0  # evaluate every N epochs (0: only at the end)
    max_iters_per_epoch: int = 0  # 0: the whole data set
    grad_clip: float = 0.0
    seed: int = 0
    loader_workers: int = -1  # DataLoader worker processes; -1: automatic (CUDA: up to 4 per device, CPU: none)
    # how a net that inherits trained weights (a morphed child, a continued parent) trains: "restart" the
    # schedule above (warm-up, then the full rate), or "continue" at inherited_lr x the rate without warm-up
    inherited: str = "restart"
    inherited_lr: float = 0.1
    # micro-batches of batch_size per device whose gradients add up to one step (a step sees
    # batch_size x ranks x accumulate images; the learning rate is scaled to that global batch)
    accumulate: int = 1

    def for_inherited(self) -> TrainConfig:
        """The schedule of a net that starts from trained weights (see ``inherited``)."""
        if self.inherited == "restart":
            return self
        if self.inherited != "continue":
            raise ValueError(f"inherited: expected 'restart' or 'continue', got {self.inherited!r}")
        base = self.base_lr * self.inherited_lr
        return replace(self, base_lr=base, min_lr=min(self.min_lr, base), warmup_iters=0)

    def lr_at(self, it: int, total: int) -> float:
        """The learning rate at iteration ``it`` of ``total``, scaled to ``batch_size``."""
        scale = self.batch_size / 16
        base, low = self.base_lr * scale, self.min_lr * scale
        if self.schedule == "cosine":
            lr = low + 0.5 * (base - low) * (1 + math.cos(math.pi * it / max(total, 1)))
        elif self.schedule == "step":
            lr = base * 0.1 ** sum(it >= s * total for s in self.steps)
        else:
            raise ValueError(f"schedule: expected 'cosine' or 'step', got {self.schedule!r}")
        warm = min(self.warmup_iters, max(total // 5, 1))
        if it < warm:
            alpha = it / warm
            lr *= self.warmup_factor * (1 - alpha) + alpha
        return lr


FAST = TrainConfig(epochs=3, schedule="cosine")
FULL = TrainConfig(epochs=24, schedule="step")


# the bounds of every TrainConfig field: the search's train: section and spnas train's flags are checked against them
_TRAIN_BOUNDS: dict[str, Any] = {
    "epochs": Annotated[StrictInt, Field(ge=1, le=1000)],
    "batch_size": Annotated[StrictInt, Field(ge=1, le=4096)],
    "base_lr": Annotated[Float, Field(gt=0.0, le=100.0)],
    "min_lr": Annotated[Float, Field(ge=0.0, le=100.0)],
    "momentum": Annotated[Float, Field(ge=0.0, lt=1.0)],
    "weight_decay": Annotated[Float, Field(ge=0.0, le=1.0)],
    "schedule": Literal["cosine", "step"],
    "steps": Annotated[tuple[Annotated[Float, Field(gt=0.0, lt=1.0)], ...], Field(max_length=8)],
    "warmup_iters": Annotated[StrictInt, Field(ge=0, le=1_000_000)],
    "warmup_factor": Annotated[Float, Field(gt=0.0, le=1.0)],
    "flip": Bool,
    "amp": Bool,
    "eval_every": Annotated[StrictInt, Field(ge=0, le=1000)],
    "max_iters_per_epoch": Annotated[StrictInt, Field(ge=0, le=10_000_000)],
    "grad_clip": Annotated[Float, Field(ge=0.0, le=1e6)],
    "seed": Annotated[StrictInt, Field(ge=0, le=2**31 - 1)],
    "loader_workers": Annotated[StrictInt, Field(ge=-1, le=256)],
    "inherited": Literal["restart", "continue"],
    "inherited_lr": Annotated[Float, Field(gt=0.0, le=1.0)],
    "accumulate": Annotated[StrictInt, Field(ge=1, le=1024)],
}


def _train_model() -> type[BaseModel]:
    """The settings of a :class:`TrainConfig`, bounded (the search's ``train:`` section), defaults from ``FAST``."""
    missing = {f.name for f in fields(FAST)} ^ set(_TRAIN_BOUNDS)
    if missing:  # a TrainConfig field without a bound here (or the reverse): a bug, caught on import
        raise SpnasError(f"spnas.detect.train: TrainConfig fields and _TRAIN_BOUNDS differ: {sorted(missing)}")
    return create_model("TrainSection", __base__=Section, **{f.name: (_TRAIN_BOUNDS[f.name], getattr(FAST, f.name)) for f in fields(FAST)})


TrainSection = _train_model()


def checked_config(base: TrainConfig, **changes: Any) -> TrainConfig:
    """``base`` with ``changes``, every value inside the bounds the search's ``train:`` section has
    (``ValidationError`` otherwise; :func:`spnas.schema.one_line` words it)."""
    values = TrainSection.model_validate({**asdict(base), **changes}).model_dump()
    return replace(base, **{**values, "steps": tuple(values["steps"])})



@dataclass
class TrainResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int = 0
    curve: dict[str, list[float]] = field(default_factory=dict)  # iteration, loss, lr: at most ~CURVE_POINTS samples


CURVE_POINTS = 200  # samples of the loss and learning-rate curve a training keeps (TensorBoard draws them per candidate)


def _progress(iterable, **kw):
    return tqdm(iterable, disable=not sys.stderr.isatty() or kw.pop("quiet", False), leave=False, **kw)


def train_detector(
    model: nn.Module,
    train_ds: DetectionDataset,
    val_ds: DetectionDataset | None,
    cfg: TrainConfig = FAST,
    *,
    device: str | torch.device = "cpu",
    writer: Any = None,
    tag: str = "",
    quiet: bool = False,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_ds``; evaluate on ``val_ds`` every ``cfg.eval_every`` epochs and at the end.

    Inside a torch.distributed process group of N ranks (one device each), the model trains as
    DistributedDataParallel: each step takes a global batch of ``batch_size x N x accumulate`` images,
    shared out as :mod:`spnas.detect.distributed` describes; rank 0 evaluates, and only its result
    carries metrics.
    """
    from spnas.detect.distributed import keyed, set_keys, step_key, unkeyed, world

    device = torch.device(device)
    model.to(device)
    rank, ranks = world()
    acc = max(1, int(cfg.accumulate))
    per_step = cfg.batch_size * ranks * acc  # the global batch
    g = torch.Generator().manual_seed(cfg.seed)
    sampler = ShardSampler(AugmentSampler(len(train_ds), generator=g, flip=cfg.flip), cfg.batch_size, rank, ranks, acc)
    loader = make_loader(train_ds, cfg.batch_size, sampler, cfg.loader_workers, device)
    steps = sampler.steps
    per_epoch = steps if not cfg.max_iters_per_epoch else min(steps, cfg.max_iters_per_epoch)
    total = per_epoch * cfg.epochs
    lr_cfg = replace(cfg, batch_size=per_step)  # linear scaling to the global batch
    samplers = keyed(model)  # every image draws its anchors and proposals by its place in the global batch
    net: nn.Module = model
    if ranks > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr_cfg.lr_at(0, total),
        momentum=cfg.momentum,
    )
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, float]] = []
    curve: dict[str, list[float]] = {"iteration": [], "loss": [], "lr": []}
    stride = max(1, math.ceil(total / CURVE_POINTS))
    metrics: dict[str, float] = {}
    it = 0
    t0 = time.perf_counter()
    transform = getattr(model, "transform", None)
    for epoch in range(cfg.epochs):
        model.train()
        running = 0.0
        batches = iter(loader)
        bar = _progress(range(per_epoch), total=per_epoch, desc=f"{tag}epoch {epoch + 1}/{cfg.epochs}", quiet=quiet)
        for _ in bar:
            lr = lr_cfg.lr_at(it, total)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad(set_to_none=True)
            value = 0.0
            for j in range(acc):
                imgs, targets = next(batches)
                keys = [step_key(cfg.seed, it, (j * ranks + rank) * cfg.batch_size + m) for m in range(len(imgs))]
                set_keys(samplers, keys)
                if hasattr(transform, "keys"):
                    transform.keys, transform.drawn = keys, 0
                imgs = [im.to(device, non_blocking=True) for im in imgs]
                targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
                sync = contextlib.nullcontext() if ranks == 1 or j == acc - 1 else net.no_sync()  # type: ignore[operator]
                with sync:
                    with torch.autocast(device.type, enabled=use_amp):
                        losses = net(imgs, targets)
                    loss = sum(losses.values())
                    _all_finite(loss, losses, epoch, it, rank, ranks)
                    scaler.scale(loss / acc).backward()
                value += loss.item() / acc
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            if ranks > 1:  # the step's loss over the global batch
                v = torch.tensor([value], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
                torch.distributed.all_reduce(v)
                value = v.item() / ranks
            running += value
            if it % stride == 0:
                curve["iteration"].append(it)
                curve["loss"].append(round(value, 5))
                curve["lr"].append(float(f"{lr:.6g}"))
            if writer is not None and it % 10 == 0:
                writer.add_scalar(f"{tag}train/loss", value, it)
                writer.add_scalar(f"{tag}train/lr", lr, it)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{value:.3f}")
            it += 1
        set_keys(samplers, None)
        rec = {"epoch": epoch + 1, "loss": running / max(per_epoch, 1), "lr": lr_cfg.lr_at(min(it, total - 1), total)}
        last = epoch + 1 == cfg.epochs
        if val_ds is not None and (last or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)):
            if rank == 0:  # one rank evaluates; the others wait for it
                metrics = evaluate(model, val_ds, device=device, batch_size=cfg.batch_size, quiet=quiet, workers=cfg.loader_workers)
                rec.update(metrics)
                if writer is not None:
                    for k, v in metrics.items():
                        writer.add_scalar(f"{tag}val/{k}", v, epoch + 1)
            if ranks > 1:
                torch.distributed.barrier()
        history.append(rec)
        if on_epoch is not None:
            on_epoch(epoch + 1, rec)
    unkeyed(model)  # torchvision's samplers again: the model leaves as it came (TorchScript compiles those)
    return TrainResult(metrics, history, time.perf_counter() - t0, it, curve)


def _all_finite(loss: torch.Tensor, losses: dict[str, torch.Tensor], epoch: int, it: int, rank: int, ranks: int) -> None:
    """Raise EvalError where the loss is not finite, on every rank at once (one rank alone would leave the
    others waiting in the gradients' all-reduce)."""
    bad = not bool(torch.isfinite(loss))
    if ranks > 1:
        flag = torch.tensor([float(bad)], device=loss.device)
        torch.distributed.all_reduce(flag)
        if flag.item() > 0 and not bad:
            raise EvalError(f"non-finite loss at epoch {epoch + 1}, iteration {it} on another rank")
    if bad:
        where = f" on rank {rank}" if ranks > 1 else ""
        raise EvalError(f"non-finite loss at epoch {epoch + 1}, iteration {it}{where}: {({k: v.item() for k, v in losses.items()})}")


class ShardSampler(torch.utils.data.Sampler):
    """This rank's share of each global batch of ``base``'s epoch: at step ``t`` and micro-step ``j`` the
    ``batch`` keys at ``t * G + (j * ranks + rank) * batch`` (``G = batch x ranks x accumulate``). With
    more than one rank or micro-step the epoch is padded to whole global batches by wrapping around (as
    ``DistributedSampler`` does), so every rank takes as many steps; alone, it is ``base`` unchanged."""

    def __init__(self, base: AugmentSampler, batch: int, rank: int = 0, ranks: int = 1, accumulate: int = 1) -> None:
        self.base, self.batch, self.rank, self.ranks, self.acc = base, batch, rank, ranks, accumulate
        self.per_step = batch * ranks * accumulate
        self.steps = max(1, math.ceil(len(base) / self.per_step))

    def __len__(self) -> int:
        return len(self.base) if self.per_step == self.batch else self.steps * self.batch * self.acc

    def __iter__(self):
        order = list(self.base)
        if self.per_step == self.batch:
            return iter(order)
        order = (order * math.ceil(self.steps * self.per_step / max(len(order), 1)))[: self.steps * self.per_step]
        mine = []
        for t in range(self.steps):
            for j in range(self.acc):
                at = t * self.per_step + (j * self.ranks + self.rank) * self.batch
                mine.extend(order[at: at + self.batch])
        return iter(mine)


def loader_workers(requested: int, device: torch.device) -> int:
    """DataLoader workers: ``requested``, or (-1) automatic: none on the CPU (they would take the training's
    cores), on CUDA up to 4 per device from this machine's cores."""
    if requested >= 0:
        return requested
    if device.type != "cuda":
        return 0
    per_device = (os.cpu_count() or 1) // max(1, torch.cuda.device_count())
    return max(0, min(4, per_device - 1))


def make_loader(ds: DetectionDataset, batch_size: int, sampler: Any, workers: int, device: torch.device) -> DataLoader:
    """The DataLoader of training and evaluation: workers (persistent across epochs), pinned memory on CUDA."""
    n = loader_workers(workers, device)
    # fork on Linux: an evaluator is a spawned process, whose children would otherwise be spawned too, each
    # importing torch and spnas again (3 s per loader here); data workers never touch CUDA, so forking is safe
    context = "fork" if n > 0 and sys.platform.startswith("linux") else None
    # its own generator: the loader draws a worker seed per epoch, which must not move torch's global generator
    # (the RPN and RoI samplers draw from that one), or a run would differ with the number of workers
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=n, generator=torch.Generator().manual_seed(0),
                      pin_memory=device.type == "cuda", persistent_workers=n > 0, prefetch_factor=2 if n > 0 else None,
                      multiprocessing_context=context)


@torch.no_grad()
def predict(model: nn.Module, ds: DetectionDataset, *, device: str | torch.device = "cpu", batch_size: int = 2, quiet: bool = True,
            workers: int = 0) -> list[dict[str, torch.Tensor]]:
    """Model outputs for every image of ``ds``, in ``ds.image_ids`` order, on the CPU."""
    device = torch.device(device)
    model.eval().to(device)
    loader = make_loader(ds, batch_size, AugmentSampler(len(ds), generator=torch.Generator(), flip=False, shuffle=False), workers, device)
    outs = []
    for imgs, _ in _progress(loader, desc="evaluate", quiet=quiet):
        for o in model([im.to(device) for im in imgs]):
            outs.append({k: v.to("cpu") for k, v in o.items()})
    return outs


def evaluate(model: nn.Module, ds: DetectionDataset, *, device: str | torch.device = "cpu", batch_size: int = 2, quiet: bool = True,
             workers: int = 0) -> dict[str, float]:
    """Every metric that fits ``ds``, of ``model``'s detections (see :func:`evaluate_outputs`)."""
    return evaluate_outputs(ds, predict(model, ds, device=device, batch_size=batch_size, quiet=quiet, workers=workers))


def _xyxy(anns: list[dict[str, Any]]) -> np.ndarray:
    return np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns], float).reshape(-1, 4)


def evaluate_outputs(ds: DetectionDataset, outs: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """COCO AP family (pycocotools), ``VOC07_AP50`` and ``VOC_AP50`` (the VOC devkit's rules), and on
    person data (ECP frames, or CityPersons-style COCO) the miss rates of :data:`~spnas.detect.metrics.LAMR_METRICS`."""
    results = detections_to_coco(outs, ds.image_ids, ds.label_to_cat)
    metrics = coco_evaluate(ds.coco, results, image_ids=ds.image_ids)
    gts, dets = {}, {}
    for img_id, o in zip(ds.image_ids, outs):
        anns = ds.coco.imgToAnns.get(img_id, [])
        gts[img_id] = {"boxes": _xyxy(anns), "labels": np.array([ds.cat_to_label[a["category_id"]] for a in anns], np.int64),
                       "difficult": np.array([bool(a.get("iscrowd", 0) or a.get("ignore", 0)) for a in anns], bool)}
        dets[img_id] = {"boxes": o["boxes"].numpy(), "scores": o["scores"].numpy(), "labels": o["labels"].numpy()}
    metrics["VOC_AP50"] = float(voc_eval(gts, dets)["VOC_AP50"])
    metrics["VOC07_AP50"] = float(voc_eval(gts, dets, method="11point")["VOC07_AP50"])
    metrics.update(person_miss_rates(ds, outs))
    return metrics


def person_miss_rates(ds: DetectionDataset, outs: list[dict[str, torch.Tensor]] | None) -> dict[str, float]:
    """The log-average miss rates of ``ds``'s protocol (none for other data); ``outs`` None: no detections."""
    protocol = ds.lamr_protocol
    if protocol is None:
        return {}
    if protocol == "ecp":  # the pedestrian class (a rider class, if trained, is ignored as the toolkit ignores it)
        person = ds.class_names.index("pedestrian") + 1
    else:  # the script measures category 1
        person = ds.cat_to_label.get(1, 1)
    gts, dets, sizes = {}, {}, {}
    for k, img_id in enumerate(ds.image_ids):
        anns = ds.coco.imgToAnns.get(img_id, [])
        if protocol == "ecp":  # every person-like box; a rider ("other VRU") is ignored or discarded, the toolkit's ignore_other_vru
            if not ds.ignore_other_vru:
                anns = [a for a in anns if a["ecp_identity"] != "rider"]
            gts[img_id] = {"boxes": _xyxy(anns), "ignore": np.array([1 if a["ecp_identity"] == "rider" else a["ecp_ignore"] for a in anns], np.int64),
                           "occlusion": np.array([a["occlusion"] for a in anns], float), "truncation": np.array([a["truncation"] for a in anns], float)}
            im = ds.coco.imgs[img_id]
            sizes[img_id] = (im["width"], im["height"])
        else:
            anns = [a for a in anns if ds.cat_to_label[a["category_id"]] == person]
            gts[img_id] = {"boxes": _xyxy(anns), "height": np.array([a.get("height", a["bbox"][3]) for a in anns], float),
                           "vis_ratio": np.array([a.get("vis_ratio", 1.0) for a in anns], float),
                           "ignore": np.array([bool(a.get("ignore", 0) or a.get("iscrowd", 0)) for a in anns], bool)}
        if outs is not None:
            o = outs[k]
            m = (o["labels"] == person).numpy()
            dets[img_id] = {"boxes": o["boxes"].numpy()[m], "scores": o["scores"].numpy()[m]}
    out = {}
    for name, (proto, subset) in LAMR_METRICS.items():
        if proto == protocol == "ecp":
            out[name] = float(ecp_lamr(gts, dets, subset=subset, sizes=sizes)["lamr"])
        elif proto == protocol == "citypersons":
            out[name] = float(citypersons_lamr(gts, dets, setup=subset)["lamr"])
    return out


def save_checkpoint(model: nn.Module, directory: str | os.PathLike, state: dict[str, Any] | None = None) -> Path:
    """``model.safetensors`` (every tensor of the state dict) + ``state.json`` (plain data)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = d / "model.safetensors.tmp"
    write_tensors(tensors, tmp)
    os.replace(tmp, d / "model.safetensors")
    (d / "state.json").write_text(json.dumps(state or {}, indent=1, default=float))
    return d


def load_checkpoint(model: nn.Module, directory: str | os.PathLike) -> dict[str, Any]:
    """Load ``model.safetensors`` into ``model`` (strict) and return ``state.json``; never unpickles."""
    d = Path(directory)
    try:
        tensors = load_file(str(d / "model.safetensors"))
    except Exception as e:  # safetensors raises several kinds on a bad file
        raise EvalError(f"{d / 'model.safetensors'}: cannot read checkpoint ({e})") from None
    model.load_state_dict(tensors, strict=True)
    p = d / "state.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def config_from_dict(d: dict[str, Any], base: TrainConfig = FAST) -> TrainConfig:
    from spnas.errors import ConfigError

    names = {f for f in asdict(base)}
    bad = sorted(set(d) - names)
    if bad:
        raise ConfigError(f"training option {bad[0]!r} is unknown; expected one of {sorted(names)}")
    if "steps" in d:
        d = {**d, "steps": tuple(d["steps"])}
    return replace(base, **d)
