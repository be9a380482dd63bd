import pytest
import torch

from spnas.errors import ArchError
from spnas.ir import load, parse, save


def test_roundtrip_bit_identical(tmp_path):
    arch = parse("XB(11,d1,d11)(0,1,2)", seed=5)
    save(arch, tmp_path / "a")
    back = load(tmp_path / "a")
    assert back.fingerprint() == arch.fingerprint()
    assert back.encode() == arch.encode()
    assert set(back.weights) == set(arch.weights)
    for k, v in arch.weights.items():
        assert torch.equal(back.weights[k], v), k
        assert back.weights[k].dtype == v.dtype
    assert back.next_id == arch.next_id


def test_load_never_unpickles(tmp_path, monkeypatch):
    save(parse("BB(1,d1)"), tmp_path)
    import pickle

    def boom(*a, **k):
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)
    load(tmp_path)


def test_truncated_weights(tmp_path):
    save(parse("BB(1,d1)"), tmp_path)
    w = tmp_path / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    with pytest.raises(ArchError, match="weights.safetensors: sha256 differs"):
        load(tmp_path)


def test_tampered_weights(tmp_path):
    save(parse("BB(1,d1)"), tmp_path)
    w = tmp_path / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ArchError, match="truncated or was modified"):
        load(tmp_path)


def test_garbage_weights_without_hash(tmp_path):
    save(parse("BB(1,d1)"), tmp_path)
    y = tmp_path / "arch.yaml"
    y.write_text(y.read_text().replace("sha256:", "old_sha256:"))
    (tmp_path / "weights.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ArchError, match="not a readable safetensors file"):
        load(tmp_path)


def test_bad_yaml_names_line(tmp_path):
    save(parse("BB(1,d1)"), tmp_path)
    (tmp_path / "arch.yaml").write_text("format: spnas-arch/1\nnodes: [\n  - {id: stem\n")
    with pytest.raises(ArchError, match=r"arch.yaml: line \d+"):
        load(tmp_path)


def test_unknown_kind_named(tmp_path):
    save(parse("BB(1,d1)"), tmp_path)
    y = tmp_path / "arch.yaml"
    y.write_text(y.read_text().replace("kind: fuse", "kind: fuse").replace("kind: output", "kind: evil", 1))
    with pytest.raises(ArchError, match="unknown node kind 'evil'"):
        load(tmp_path)


def test_arch_yaml_names_only_files_inside_its_directory(tmp_path):
    import yaml

    from spnas.errors import ArchError
    from spnas.ir import load, parse, save

    d = tmp_path / "a"
    save(parse("BB(1,d1,d1,d1)"), d)
    doc = yaml.safe_load((d / "arch.yaml").read_text())
    for change, says in [({"weights": {"file": "../../w/x"}}, "weights.file: expected a file name inside"),
                         ({"next_id": "abc"}, "next_id: expected an int"),
                         ({"weights": "x"}, "weights: expected a mapping")]:
        (d / "arch.yaml").write_text(yaml.safe_dump({**doc, **change}))
        with pytest.raises(ArchError, match=says):
            load(d)
    bad = dict(doc)
    bad["nodes"] = [dict(n) for n in doc["nodes"]]
    bad["nodes"][-1] = {**bad["nodes"][-1], "spec": {"name": "res5/../x"}}
    (d / "arch.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ArchError, match="output name: expected a plain identifier"):
        load(d)
