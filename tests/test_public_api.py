"""The public surface of DESIGN §7, called exactly as written there."""

import numpy as np
import pytest
import torch
import torchvision

from spnas.detect import build_detector, compile_backbone, lift
from spnas.errors import ArchError, ConfigError, DataError, EncodingError, EvalError, SpnasError
from spnas.ir import Arch, from_torchvision, load, parse, save
from spnas.ops import get_morphism, list_morphisms, register_morphism


def test_errors_form_one_hierarchy():
    for e in (EncodingError, ArchError, ConfigError, DataError, EvalError):
        assert issubclass(e, SpnasError)


def test_public_surface_end_to_end(tmp_path):
    arch = parse("BNB(111,d111,d11111,d11)", stem="resnet", seed=0)
    assert isinstance(arch, Arch) and arch.encode() == "BNB(111,d111,d11111,d11)"
    assert arch.verify() is None
    assert isinstance(arch.flops((224, 224)), int) and arch.flops((224, 224)) == pytest.approx(4.09e9, rel=0.01)
    assert arch.params() == sum(p.numel() for p in compile_backbone(arch).parameters())
    assert parse("BNB(111,d111,d11111,d11)", seed=1).fingerprint() == arch.fingerprint()  # ignores weights
    save(arch, tmp_path / "a")
    assert load(tmp_path / "a").fingerprint() == arch.fingerprint()

    tv = torchvision.models.resnet18()
    assert from_torchvision(tv).encode() == from_torchvision(tv.state_dict()).encode() == "BB(11,d1,d1,d1)"

    assert {"expand", "swap", "widen", "add_stage", "add_subnet"} <= set(list_morphisms())
    assert callable(register_morphism)
    m = get_morphism("expand")
    assert m.exact is True
    sites = list(m.sites(arch))
    child = m.apply(arch, sites[0], np.random.default_rng(0))
    assert isinstance(child, Arch) and child.params() > arch.params() and arch.encode() == "BNB(111,d111,d11111,d11)"

    body = compile_backbone(child).eval()
    out = body(torch.randn(1, 3, 64, 64))
    assert list(out) == list(body.output_shape()) == ["res2", "res3", "res4", "res5"]
    assert body.output_shape()["res5"] == (2048, 32)
    assert lift(child, body).fingerprint() == child.fingerprint()
    for head in ("cascade", "faster"):
        det = build_detector(child, 3, head=head, min_size=64, max_size=64).eval()
        with torch.no_grad():
            (res,) = det([torch.rand(3, 64, 64)])
        assert set(res) == {"boxes", "labels", "scores"}
