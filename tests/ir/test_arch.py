import pytest
import torch

from spnas.errors import ArchError
from spnas.ir import Arch, BlockSpec, parse


def test_flops_resnet50():
    assert abs(parse("BNB(111,d111,d11111,d11)").flops((224, 224)) / 1e9 - 4.09) < 0.01


def test_params_resnet18():
    assert parse("BB(11,d1,d1,d1)").params() == 11176512


def test_fingerprint_ignores_ids_and_weights():
    a, b = parse("BB(11,d1,d1,d1)", seed=0), parse("BB(11,d1,d1,d1)", seed=1)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != parse("BB(11,d1,d11,d1)").fingerprint()
    assert a.fingerprint() != parse("BB(1,1d1,d1,d1)").fingerprint()
    assert parse("BB(11,d1,d1,d1)(0,1,0,0)").fingerprint() != parse("BB(11,d1,d1,d1)(0,0,1,0)").fingerprint()


def test_seeded_init():
    a, b, c = parse("BB(1,d1)", seed=3), parse("BB(1,d1)", seed=3), parse("BB(1,d1)", seed=4)
    assert torch.equal(a.weights["b1/conv1.weight"], b.weights["b1/conv1.weight"])
    assert not torch.equal(a.weights["b1/conv1.weight"], c.weights["b1/conv1.weight"])


def test_stages_and_parallel_layout():
    arch = parse("BNB(111,d111,d11111,d11)(0,2,1,3)")
    stages = arch.stages()
    assert [len(s.blocks) for s in stages] == [3, 4, 6, 3]
    assert [len(s.subnets) for s in stages] == [0, 2, 1, 3]
    assert all(len(sub.blocks) == len(s.blocks) for s in stages for sub in s.subnets)


def test_verify_names_node_on_channel_mismatch():
    arch = parse("BB(11,d1)")
    bad = BlockSpec("basic", 32, 64, 1, shortcut="conv_bn")
    arch.set_spec("b1", bad, {k: torch.zeros(s) for k, s in __import__("spnas.ir.nodes", fromlist=["x"]).get_kind("block").tensors(bad).items()})
    with pytest.raises(ArchError, match="node 'b1'.*expected 32 input channels, got 64"):
        arch.verify()
    assert not arch.is_valid()


def test_verify_names_node_on_weight_shape():
    arch = parse("BB(11,d1)")
    arch.weights["b2/conv1.weight"] = torch.zeros(1)
    with pytest.raises(ArchError, match="node 'b2': tensor 'conv1.weight' expected shape"):
        arch.verify()


def test_verify_rejects_equal_output_strides():
    arch = parse("BB(11,d1)")
    arch.set_input("res3", 0, "b1")
    with pytest.raises(ArchError, match="both have stride 4"):
        arch.verify()


def test_mint_never_reuses():
    arch = parse("BB(11,d1)")
    ids = {arch.mint_id("b") for _ in range(5)}
    assert not ids & set(arch.nodes())
    assert len(ids) == 5
    assert arch.clone().mint_id("b") not in ids


def test_clone_is_independent():
    a = parse("BB(11,d1)")
    b = a.clone()
    b.remove_node("res3")
    assert "res3" in a and "res3" not in b
    assert isinstance(a, Arch)
