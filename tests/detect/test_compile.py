import os
import shutil

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from spnas.detect import compile_backbone, export_inference, lift
from spnas.errors import ConfigError
from spnas.ir import from_torchvision, parse
from tests.codes import TORCHVISION_CODES

TV = TORCHVISION_CODES


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def _features(model, x):
    return torch.nn.Sequential(*list(model.children())[:-2])(x)


@pytest.mark.parametrize("name", list(TV))
def test_torchvision_equivalence(name):
    torch.manual_seed(0)
    model = _randomise(getattr(torchvision.models, name)())
    arch = from_torchvision(model)
    assert arch.encode() == TV[name]
    body = compile_backbone(arch)
    x = torch.randn(2, 3, 96, 128)
    model.eval()
    body.eval()
    with torch.no_grad():
        ref, out = _features(model, x), body(x)["res5"]
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    model.train()
    body.train()
    with torch.no_grad():
        ref, out = _features(model, x), body(x)["res5"]
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()
    # both updated their running statistics the same way
    sd = body.state_dict()
    assert torch.allclose(sd["b0.bn1.running_mean"], model.layer1[0].bn1.running_mean, atol=1e-6)


def test_state_dict_import_without_module():
    model = torchvision.models.resnet18()
    arch = from_torchvision(model.state_dict())
    assert arch.encode() == "BB(11,d1,d1,d1)"


@pytest.mark.parametrize("code", ["BB(11,d1,d1,d1)", "BNB(111,d111,d11111,d11)", "XB(1,d1,d1)(0,2,1)", "BB(11d,1111,d11111111,d111,1,1111)"])
def test_params_and_flops_match_torch(code):
    arch = parse(code)
    body = compile_backbone(arch)
    assert sum(p.numel() for p in body.parameters()) == arch.params()
    with FlopCounterMode(display=False) as fc:
        body.eval()(torch.zeros(1, 3, 224, 224))
    macs = fc.get_total_flops() / 2
    assert abs(arch.flops((224, 224)) - macs) <= 0.01 * macs


def test_output_shape_matches_forward():
    arch = parse("BNB(11,d1,d1,1,1)(0,1,0,2,0)", stem="deep")
    body = compile_backbone(arch)
    out = body(torch.randn(1, 3, 256, 192))
    shapes = body.output_shape()
    assert list(out) == list(shapes)
    for name, t in out.items():
        c, s = shapes[name]
        assert t.shape[1] == c and t.shape[2] == 256 // s and t.shape[3] == 192 // s
    assert body.out_channels == out[list(out)[-1]].shape[1]
    assert body.channels_list == [t.shape[1] for t in out.values()]


def test_no_networkx_at_run_time():
    body = compile_backbone(parse("BB(1,d1)"))
    assert "networkx" not in body.code and "arch" not in body.code


def test_subnets_do_not_share_weights():
    body = compile_backbone(parse("BB(1,d1)(0,1)"))
    ptrs = [p.data_ptr() for p in body.parameters()]
    assert len(ptrs) == len(set(ptrs))


def test_lift_roundtrip():
    arch = parse("BB(1,d1)(0,1)")
    body = compile_backbone(arch)
    with torch.no_grad():
        for p in body.parameters():
            p.add_(1.0)
    new = lift(arch, body)
    assert torch.equal(new.weights["b0/conv1.weight"], arch.weights["b0/conv1.weight"] + 1)
    assert new.fingerprint() == arch.fingerprint()
    x = torch.randn(1, 3, 64, 64)
    body.eval()
    assert torch.equal(compile_backbone(new).eval()(x)["res3"], body(x)["res3"])


def test_export_inference_matches():
    arch = parse("BNB(11,d1,d1)(0,1,1)", seed=2)
    body = compile_backbone(arch).eval()
    ex = export_inference(body)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        a, b = body(x), ex(x)
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 1e-4 * a[k].abs().max()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ex.modules())
    assert body.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())


def _close(a, b):
    return all((a[k] - b[k]).abs().max() <= 1e-4 * a[k].abs().max() for k in a) and list(a) == list(b)


def test_export_torchscript_matches_and_needs_an_example():
    body = compile_backbone(parse("BB(1,d1,d1)(0,1,1)", seed=3)).eval()
    x = torch.randn(1, 3, 96, 96)
    ex = export_inference(body, example=x, backend="torchscript")
    with torch.inference_mode():
        assert _close(body(x), ex(x))
    with pytest.raises(ConfigError, match="needs an example"):
        export_inference(body, backend="torchscript")
    with pytest.raises(ConfigError, match="backend 'onnx' is not one of eager, torchscript, inductor"):
        export_inference(body, backend="onnx")


@pytest.mark.slow  # compiles twice: in .ci/run
@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="inductor needs a C++ compiler")
def test_export_inductor_matches_at_two_sizes_in_inference_mode():
    arch = parse("BNB(1,d1,d1)(0,1,1)", seed=4)
    body = compile_backbone(arch).eval()
    x = torch.randn(1, 3, 96, 96)
    ex = export_inference(body, example=x, backend="inductor")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ex.modules())
    y = torch.randn(2, 3, 64, 128)  # a new size: compiled again, frozen again
    with torch.inference_mode():
        ref_x, ref_y = body(x), body(y)
        out_x, out_y = ex(x), ex(y)
    assert _close(ref_x, out_x) and _close(ref_y, out_y)
    assert ex.output_shape() == body.output_shape()
    assert not out_x["res4"].is_inference()  # run outside inference mode: what inductor freezes
    assert all(p.requires_grad for p in body.parameters())  # the source module is untouched


def test_export_inductor_compiler_failure_is_one_config_error():
    import torch._inductor.config as inductor_config

    body = compile_backbone(parse("BB(1,d1,d1)", seed=5)).eval()
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",), "fx_graph_cache": False}):
        with pytest.raises(ConfigError, match=r"torch.compile \(inductor\) failed: .*; use backend 'eager' or 'torchscript'$") as info:
            export_inference(body, example=torch.randn(1, 3, 72, 72), backend="inductor")
    assert "\n" not in str(info.value)
