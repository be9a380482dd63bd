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
    arch.set_tensors("b2", {"conv1.weight": torch.zeros(1)})
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


# ------------------------------------------------------------------ fx-style editing
def test_weights_and_the_id_counter_are_read_only_from_outside():
    arch = parse("BB(1,d1)")
    with pytest.raises(TypeError):
        arch.weights["b0/conv1.weight"] = torch.zeros(1)
    with pytest.raises(AttributeError):
        arch.weights = {}
    with pytest.raises(AttributeError):
        arch.next_id = 0
    t = torch.ones(64, 64, 3, 3)
    arch.set_tensors("b0", {"conv1.weight": t})
    assert arch.weights["b0/conv1.weight"] is t
    with pytest.raises(ArchError, match="no node 'nope'"):
        arch.set_tensors("nope", {"x": t})
    n = arch.next_id
    arch.reserve_ids(n - 1)  # never goes back
    assert arch.next_id == n and arch.mint_id("b") == f"b{n}"
    with pytest.raises(ArchError, match="keys differ"):
        arch.with_weights({})


def test_insert_after_takes_over_every_use_and_moves_the_tap():
    arch = parse("BB(11,d1,d1,d1)(0,1,0,0)")
    st = arch.stages()[1]
    top = st.blocks[-1]
    users = arch.users(top)
    assert st.subnets[0].fuse in users and arch.stages()[2].blocks[0] in users
    spec = BlockSpec("basic", 128, 128)
    new = arch.insert_after(top, "block", spec, prefix="b")
    assert arch.inputs(new) == (top,) and arch.users(top) == [new]
    assert sorted(arch.users(new)) == sorted(users)
    arch.verify()
    assert arch.stages()[1].blocks[-1] == new
    last = arch.stages()[-1].blocks[-1]
    tail = arch.insert_after(last, "block", BlockSpec("basic", 512, 512), prefix="b")
    assert arch.stages()[-1].tap == "res5" and arch.inputs("res5") == (tail,)  # the tap followed
    arch.verify()
    with pytest.raises(ArchError, match="takes 2 inputs"):
        arch.insert_after(top, "add", None)


def test_replace_all_uses_with_then_erase_undoes_an_insert():
    arch = parse("BB(11,d1,d1,d1)")
    before = arch.fingerprint()
    new = arch.insert_after("b1", "block", BlockSpec("basic", 64, 64), prefix="b")
    assert arch.inputs("res2") == (new,)
    with pytest.raises(ArchError, match=rf"node '{new}' still feeds .*replace_all_uses_with\(\) first"):
        arch.erase(new)
    changed = arch.replace_all_uses_with(new, "b1")
    assert sorted(changed) == ["b2", "res2"] and arch.users(new) == []  # the new node keeps reading b1: no cycle
    arch.erase(new)
    arch.verify()
    assert arch.fingerprint() == before and new not in arch and not arch.tensors(new)


def test_taps_follow_a_stride_that_moved():
    """What ``swap`` does, by hand: no rule has to rewire a tap."""
    import dataclasses

    arch = parse("BB(11,d11,d1,d1)")
    assert arch.inputs("res2") == ("b1",)
    b2, b1 = arch.spec("b2"), arch.spec("b1")
    arch.set_spec("b2", dataclasses.replace(b2, stride=1), arch.tensors("b2"))
    arch.set_spec("b1", dataclasses.replace(b1, in_channels=64, planes=64, stride=2, shortcut="conv"),
                  {**arch.tensors("b1"), "downsample.0.weight": torch.zeros(64, 64, 1, 1)})
    arch.verify()
    assert [s.blocks for s in arch.stages()][:2] == [("b0",), ("b1", "b2", "b3", "b4")]
    assert arch.inputs("res2") == ("b0",) and arch.inputs("res3") == ("b4",)


def test_structure_reads_roles_not_kind_names():
    arch = parse("BB(11,d1,d1,d1)(0,1,0,0)")
    assert arch.role("stem") == "source" and arch.role("res2") == "tap" and arch.role("b0") == "block"
    sub = arch.stages()[1].subnets[0]
    assert arch.role(sub.fuse) == "fuse" and arch.role(sub.add) == "merge"
    assert arch.taps() == arch.outputs() and sorted(arch.taps()) == ["res2", "res3", "res4", "res5"]
    assert arch.nodes_with_role("merge") == [sub.add]
    with pytest.raises(ArchError, match="role: expected one of"):
        arch.nodes_with_role("side")
