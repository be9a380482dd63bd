"""Issue 26, item 2: the normalisations for small per-device batches (``detector.options.norm``): every
exact morphism stays exact under each, the IR sees a BatchNorm whichever trained, and export folds each."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spnas.detect import compile_backbone, lift
from spnas.detect.compile import export_inference
from spnas.detect.distributed import FrozenBatchNorm2d, SyncBatchNorm2d, set_norm
from spnas.ir import parse
from spnas.ops import get_morphism, list_morphisms, relative_error

NETS = ["BB(1,d1,d1,d1)", "BB(11,d1,1d1,d1)", "BB(1,d11,d1,d1,1)"]


def run(arch, norm, x, train):
    body = set_norm(compile_backbone(arch), norm).to(x.dtype).train(train)
    with torch.no_grad():
        return dict(body(x))


@pytest.mark.parametrize("norm", ["frozen", "sync"])
def test_every_exact_rule_stays_exact_under_each_norm(norm):
    rules = [m for m in (get_morphism(n) for n in list_morphisms()) if m.exact]
    assert {"expand", "add_stage", "widen", "add_subnet"} <= {m.name for m in rules}
    x = torch.randn(4, 3, 96, 96, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rng = np.random.default_rng(0)
    tried = 0
    for code in NETS:
        arch = parse(code, seed=1)
        arch = arch.with_weights({k: v.double() if v.is_floating_point() else v for k, v in arch.weights.items()})
        for m in rules:
            sites = m.sites(arch)
            if not sites:
                continue
            after = m.apply(arch, sites[int(rng.integers(len(sites)))], rng)
            for train in (False, True):
                err = relative_error(run(arch, norm, x, train), run(after, norm, x, train))
                assert err <= 1e-9, (norm, code, m.name, train, err)
            tried += 1
    assert tried >= 12


@pytest.mark.parametrize("norm,kind", [("frozen", FrozenBatchNorm2d), ("sync", SyncBatchNorm2d)])
def test_the_ir_sees_a_batchnorm_and_export_folds_each(norm, kind):
    arch = parse("BB(1,d1,d1,d1)", seed=2)
    body = set_norm(compile_backbone(arch), norm)
    assert any(isinstance(mod, kind) for mod in body.modules())
    assert not any(type(mod) is torch.nn.BatchNorm2d for mod in body.modules())
    opt = torch.optim.SGD([p for p in body.parameters() if p.requires_grad], lr=0.01)
    for i in range(3):  # a few training steps: sync's running statistics move, frozen's stay
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(i))
        loss = sum(v.square().mean() for v in body.train()(x).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    lifted = lift(arch, body)  # BatchNorm's names, num_batches_tracked included
    mean = "stem/bn1.running_mean"
    assert torch.equal(lifted.weights[mean], arch.weights[mean]) == (norm == "frozen")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        eager = dict(body.eval()(x))
        exported = export_inference(body)
        assert not any(isinstance(mod, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)) for mod in exported.modules() if mod is not body
                       and not any(mod is b for b in body.modules()))
        folded = dict(exported(x))
        rebuilt = dict(compile_backbone(lifted).eval()(x))  # the lifted IR as a plain BatchNorm net
    assert relative_error(eager, folded) < 1e-5 and relative_error(eager, rebuilt) < 1e-6


@pytest.mark.parametrize("norm", ["bn", "frozen", "sync"])
def test_a_trained_detector_exports_under_each_norm(norm, tmp_path):
    """Training keys the samplers and may hold SyncBatchNorm2d: neither may reach TorchScript (found by the export tests)."""
    from spnas.detect.data import generate_shapes, load_coco
    from spnas.detect.detector import build_detector
    from spnas.detect.infer import export_detector
    from spnas.detect.train import TrainConfig, train_detector

    train = load_coco(generate_shapes(tmp_path, n_images=4, size=64, seed=0))
    torch.manual_seed(0)
    model = build_detector(parse("BB(1,d1,d1,d1)"), train.num_classes, "cascade", preset="lean", min_size=64, max_size=64,
                           train_scales=(0.8, 1.0), norm=norm, box_score_thresh=0.0)
    train_detector(model, train, None, TrainConfig(epochs=1, batch_size=2, warmup_iters=1, max_iters_per_epoch=2), quiet=True)
    path = export_detector(model, tmp_path / "det.pt")
    x = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        eager = model.eval()(x)[0]
        _, scripted = torch.jit.load(str(path))(x)
    assert len(eager["boxes"]) > 0 and torch.allclose(scripted[0]["boxes"], eager["boxes"], atol=1e-4)
