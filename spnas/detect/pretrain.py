"""Reignite: classification pre-training of a backbone, then its weights back into the Arch.

SP-NAS re-pretrains the grown backbone on ImageNet when the serial search stalls (paper §3.2).
Here the backbone + global average pool + a linear head train on an ImageFolder directory (ImageNet
in real use), on Fashion-MNIST (the IDX files Debian's ``dataset-fashion-mnist`` installs), or on a
generated shapes classification set (tests); then :func:`~spnas.detect.lift` writes the trained
backbone back.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ImageDraw
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from spnas.detect.compile import compile_backbone, lift
from spnas.errors import ConfigError
from spnas.ir import Arch

__all__ = ["reignite", "classification_data", "ClassifierNet"]

FASHION_DIRS = ("/usr/share/dataset-fashion-mnist", "/usr/share/fashion-mnist", "/usr/share/datasets/fashion-mnist")


class ClassifierNet(nn.Module):
    """Input normalisation, backbone, global average pool of its last stage, linear classifier.

    Images come in as [0, 1]; they are normalised with the detector's mean and std
    (:data:`~spnas.detect.detector.IMAGE_MEAN`), so the pre-trained backbone sees the inputs it will
    see in the detector.
    """

    def __init__(self, arch: Arch, num_classes: int) -> None:
        super().__init__()
        from spnas.detect.detector import IMAGE_MEAN, IMAGE_STD

        self.body = compile_backbone(arch)
        self.fc = nn.Linear(self.body.out_channels, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.body((x - self.mean) / self.std)
        return self.fc(F.adaptive_avg_pool2d(next(reversed(feats.values())), 1).flatten(1))


def _generated(n: int, size: int, seed: int) -> TensorDataset:
    from spnas.detect.data import SHAPE_CLASSES, _draw_shape, contrasting_colour, textured_background

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        bg, img = textured_background(rng, size)
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        s = int(rng.integers(size // 3, size - 4))
        x0, y0 = (int(v) for v in rng.integers(0, size - s, 2))
        _draw_shape(ImageDraw.Draw(img), cls, (x0, y0, x0 + s, y0 + s), contrasting_colour(rng, bg))
        xs.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
        ys.append(cls)
    return TensorDataset(torch.stack(xs).float().div(255), torch.tensor(ys))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist_dir() -> Path | None:
    """Where Fashion-MNIST's IDX files are (Debian's ``dataset-fashion-mnist``), or None."""
    for d in FASHION_DIRS:
        root = Path(d)
        if sorted(root.glob("train-images-idx3-ubyte*")) and sorted(root.glob("train-labels-idx1-ubyte*")):
            return root
    return None


def _fashion(n: int, size: int) -> TensorDataset:
    for d in FASHION_DIRS:
        root = Path(d)
        imgs = sorted(root.glob("train-images-idx3-ubyte*"))
        labels = sorted(root.glob("train-labels-idx1-ubyte*"))
        if imgs and labels:
            x = torch.from_numpy(_read_idx(imgs[0])[:n].copy()).float().div(255).unsqueeze(1)
            y = torch.from_numpy(_read_idx(labels[0])[:n].astype(np.int64))
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
            return TensorDataset(x, y)
    raise ConfigError(f"reignite.data: fashion-mnist: no IDX files in {FASHION_DIRS}; apt-get install dataset-fashion-mnist")


def classification_data(spec: str, *, n: int = 512, size: int = 64, seed: int = 0) -> tuple[Dataset, int]:
    """``generated``, ``fashion-mnist`` or an ImageFolder directory; returns (data set, classes)."""
    if spec == "generated":
        return _generated(n, size, seed), 4
    if spec == "fashion-mnist":
        return _fashion(n, size), 10
    root = Path(spec)
    if not root.is_dir():
        raise ConfigError(f"reignite.data: expected 'generated', 'fashion-mnist' or an ImageFolder directory, got {spec!r}")
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(), transforms.ToTensor()])
    ds = datasets.ImageFolder(str(root), transform=tf)
    return ds, len(ds.classes)


def reignite(arch: Arch, cfg: dict[str, Any], *, device: str = "cpu", seed: int = 0, norm: str | None = None) -> Arch:
    """Train ``arch``'s backbone as a classifier per ``cfg`` (ReigniteConfig fields); return the lifted Arch.

    Inside a torch.distributed process group of N ranks it trains data-parallel: every rank draws the
    same global batch, computes its 1/N share (DistributedDataParallel averages the gradients, each
    share's loss weighted so the average is the global batch's mean), and the BatchNorm statistics are
    synchronised over the ranks, so N ranks train as one process on the whole batch. ``norm``: the
    BatchNorm kind (:data:`~spnas.detect.distributed.NORMS`); default ``sync`` under a group, else ``bn``."""
    from spnas.detect.distributed import set_norm, world

    rank, ranks = world()
    ds, n_classes = classification_data(cfg.get("data", "generated"), n=int(cfg.get("n_images", 512)), size=int(cfg.get("image_size", 64)), seed=seed)
    torch.manual_seed(seed)
    net = ClassifierNet(arch, n_classes)
    set_norm(net, norm or ("sync" if ranks > 1 else "bn"))  # sync: statistics over the global batch, as one process computes them
    net = net.to(device).train()
    model: nn.Module = net
    if ranks > 1:
        from torch.nn.parallel import DistributedDataParallel

        dev = torch.device(device)
        model = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.SGD(net.parameters(), lr=float(cfg.get("lr", 0.05)), momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(ds, batch_size=int(cfg.get("batch_size", 32)), shuffle=True, generator=torch.Generator().manual_seed(seed))
    epochs = int(cfg.get("epochs", 1))
    total = max(1, epochs * len(loader))
    it = 0
    for _ in range(epochs):
        for x, y in loader:
            for g in opt.param_groups:
                g["lr"] = float(cfg.get("lr", 0.05)) * 0.5 * (1 + np.cos(np.pi * it / total))
            if ranks > 1:  # this rank's share of the global batch
                n = len(x)
                lo, hi = rank * n // ranks, (rank + 1) * n // ranks
                loss = F.cross_entropy(model(x[lo:hi].to(device)), y[lo:hi].to(device), reduction="sum") * (ranks / n)
            else:
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            it += 1
    return lift(arch, net.body.to("cpu"))
