"""Node kinds: one registration each, layouts stated once, and a user's kind accepted everywhere with no edit to spnas."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from spnas.detect import compile_backbone, lift
from spnas.errors import ArchError, EncodingError
from spnas.ir import (
    AddSpec,
    BlockSpec,
    FuseSpec,
    OutputSpec,
    StemSpec,
    decode,
    get_kind,
    list_kinds,
    load,
    parse,
    register_kind,
    save,
    unregister_kind,
)
from spnas.ops import check, get_morphism, load_plugin, unregister_morphism

ROOT = Path(__file__).resolve().parents[2]

BUILTIN_SPECS = {
    "stem": [StemSpec(), StemSpec("deep"), StemSpec("resnet", 1, 32)],
    "block": [
        BlockSpec("basic", 64, 64),
        BlockSpec("basic", 64, 128, 2, shortcut="conv_bn"),
        BlockSpec("basic", 64, 128, 2, shortcut="conv", dilation=2),
        BlockSpec("bottleneck", 64, 64, shortcut="conv_bn"),
        BlockSpec("bottleneck", 256, 64),
        BlockSpec("bottleneck", 256, 128, 2, 32, 4, shortcut="conv"),
        BlockSpec("bottleneck", 512, 256, 2, 64, 4, 2, "conv_bn"),
    ],
    "fuse": [FuseSpec(128, 64), FuseSpec(2048, 1024)],
    "add": [AddSpec(64)],
    "output": [OutputSpec("res4")],
}


@pytest.mark.parametrize("kind", sorted(BUILTIN_SPECS))
def test_declared_tensors_equal_the_built_modules_state_dict(kind):
    """Each built-in kind's layout is stated once, by its module: the IR's tensors are that module's state dict."""
    k = get_kind(kind)
    for spec in BUILTIN_SPECS[kind]:
        declared = k.tensors(spec)
        module = k.build(spec)  # a real module on the CPU, not the meta one the IR derives from
        state = {} if module is None else {n: tuple(t.shape) for n, t in module.state_dict().items()}
        assert declared == state, (kind, spec)
        assert list(declared) == list(state)  # in state-dict order: seeded initialisation draws in this order
        fresh = k.init(spec, torch.Generator().manual_seed(0))
        assert {n: tuple(t.shape) for n, t in fresh.items()} == declared
        if module is not None:
            module.load_state_dict(fresh, strict=True)


def test_every_builtin_kind_has_specs_here():
    from spnas.ir.nodes import BUILTIN_KINDS

    assert set(BUILTIN_KINDS) == set(BUILTIN_SPECS) and set(BUILTIN_KINDS) <= set(list_kinds())
    assert all(get_kind(k).source.endswith(("nodes.py",)) for k in BUILTIN_KINDS)  # stated in spnas/ir/nodes.py, nowhere else


def test_macs_equal_the_flop_counter_for_every_builtin_kind():
    for kind, specs in BUILTIN_SPECS.items():
        k = get_kind(kind)
        for spec in specs:
            if k.build(spec) is None:
                continue
            inputs = [(getattr(spec, "in_channels", getattr(spec, "channels", 3)), 40, 56)] * k.arity or [(spec.in_channels, 96, 80)]
            macs, out = k.macs(spec, inputs)
            with FlopCounterMode(display=False) as fc, torch.no_grad():
                y = k.build(spec).eval()(*[torch.zeros(1, *s) for s in inputs])
            assert macs == fc.get_total_flops() // 2 and out == tuple(y.shape[1:]), (kind, spec)


def test_registration_refuses_bad_kinds():
    from dataclasses import dataclass

    @dataclass
    class Mutable:
        c: int

    with pytest.raises(ArchError, match="'bad': spec must be a frozen dataclass"):
        register_kind("bad", spec=Mutable)(torch.nn.Identity)

    @dataclass(frozen=True)
    class Frozen:
        c: int

    with pytest.raises(ArchError, match="'bad': role must be one of source, block, fuse, merge, tap"):
        register_kind("bad", spec=Frozen, role="side")(torch.nn.Identity)
    with pytest.raises(ArchError, match="'block' is already registered"):
        register_kind("block", spec=Frozen)(torch.nn.Identity)
    with pytest.raises(ArchError, match="kind name: expected lower-case"):
        register_kind("Bad Name", spec=Frozen)(torch.nn.Identity)
    with pytest.raises(ArchError, match="built in"):
        unregister_kind("block")
    assert "bad" not in list_kinds()


def test_a_custom_encoding_is_refused_as_a_code():
    with pytest.raises(EncodingError, match=r"at position 0 of '~BB\(1\[se\]1,d1\)': a custom encoding.*load the net's IR"):
        decode("~BB(1[se]1,d1)")


# ------------------------------------------------------------------ a throwaway kind from a temporary module
PLUGIN = textwrap.dedent(
    '''
    """A depthwise 3x3 residual unit: y = x + bn(dw(x)); BN gamma = beta = 0 makes a fresh one the identity."""
    from dataclasses import dataclass

    import torch
    from torch import nn

    from spnas.ir import register_kind
    from spnas.ops import register_morphism


    @dataclass(frozen=True)
    class DwSpec:
        channels: int


    def zero_bn(spec, t):
        t["bn.weight"] = torch.zeros_like(t["bn.weight"])
        return t


    @register_kind("dwres", spec=DwSpec, role="block", init=zero_bn)
    class DwRes(nn.Module):
        def __init__(self, spec):
            super().__init__()
            self.dw = nn.Conv2d(spec.channels, spec.channels, 3, padding=1, groups=spec.channels, bias=False)
            self.bn = nn.BatchNorm2d(spec.channels)

        def forward(self, x):
            return x + self.bn(self.dw(x))


    def sites(arch):
        return [b for b in arch.main_chain() if arch.kind(b) == "block"]


    @register_morphism("add_dwres", exact=True, sites=sites)
    def add_dwres(arch, site, rng):
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        arch.insert_after(site, "dwres", DwSpec(arch.specs()[site].channels), gen=gen)
        return arch
    '''
)


@pytest.fixture
def throwaway(tmp_path):
    path = tmp_path / "dwres_plugin.py"
    path.write_text(PLUGIN)
    load_plugin(str(path))
    yield path
    unregister_morphism("add_dwres")
    unregister_kind("dwres")
    sys.modules.pop("spnas_plugin_dwres_plugin", None)


@pytest.mark.slow  # every command on a throwaway kind: in .ci/run
def test_a_throwaway_kind_is_accepted_everywhere(throwaway, tmp_path):
    arch = parse("BB(11,d1,d1,d1)", seed=1)
    rng = np.random.default_rng(0)
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    # the rule is exact through the compiler, in eval and train mode, at a stage's end (its tap follows)
    r = check("add_dwres", arch, x, site="b3", rng=rng)
    assert r.eval_error == 0.0 and r.train_error == 0.0
    child = r.after
    child.verify()
    assert [st.blocks for st in child.stages()][1][-1].startswith("dwres")
    assert child.stages()[1].tap == "res3" and child.inputs("res3") == (child.stages()[1].blocks[-1],)
    assert child.code() == "~BB(11,d1[dwres],d1,d1)" and child.custom_kinds() == ["dwres"]
    # the built-in rules work around it; a trained (non-zero) dwres is kept by the exact ones
    dw = child.stages()[1].blocks[-1]
    child.set_tensors(dw, {"bn.weight": torch.full((128,), 0.5), "bn.bias": torch.full((128,), 0.1)})
    for name in ("expand", "widen", "add_stage", "add_subnet", "swap"):
        m = get_morphism(name)
        sites = m.sites(child)
        for site in {sites[0], sites[-1]}:  # the first and the last: a stage's start and the net's end
            rr = check(m, child, x, site=site, rng=np.random.default_rng(1))
            if m.exact:
                assert rr.error < 1e-6, (name, site, rr.error)  # widen splits weights: float64 rounding
    # FLOPs: derived from the module, equal to torch's flop counter on the compiled backbone
    body = compile_backbone(child).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        body(torch.zeros(1, 3, 160, 224))
    assert child.flops((160, 224)) == fc.get_total_flops() // 2
    assert child.flops((160, 224)) > arch.flops((160, 224))
    # lift and save/load: bit-identical, the plugin named in arch.yaml
    trained = lift(child, body)
    d = save(trained, tmp_path / "net")
    back = load(d)
    assert back.fingerprint() == child.fingerprint() and back.code() == child.code()
    assert all(torch.equal(back.weights[k], v) for k, v in trained.weights.items())
    doc = (d / "arch.yaml").read_text()
    assert f"dwres: {throwaway}" in doc and "code: ~BB(11,d1[dwres],d1,d1)" in doc
    # a process that has not loaded the plugin is told which file to load, in one line
    p = subprocess.run([sys.executable, "-m", "spnas.ir", "show", str(d)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and p.stderr.count("\n") == 1
    assert f"has kind 'dwres', which a plugin defines ({throwaway}): load it first" in p.stderr
    p = subprocess.run([sys.executable, "-m", "spnas.ir", "show", str(d), "--json", "--plugin", str(throwaway)],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert shown["code"] == "~BB(11,d1[dwres],d1,d1)" and shown["grammar"] == "custom" and shown["custom_kinds"] == ["dwres"]
    assert shown["gmacs"] == round(child.flops((224, 224)) / 1e9, 4)


def test_a_throwaway_kind_is_searched(throwaway, tmp_path):
    """The search takes the plugin from its config and journals that the grammar cannot express the net."""
    from spnas.search import Search, config_from_dict
    from tests.search.fake import FakeEvaluator
    from tests.search.test_loop import BASE

    d = json.loads(json.dumps(BASE))
    d["search"].update(plugins=[str(throwaway)], morphisms=["expand", "add_dwres"], max_generations=3, max_blocks=12)
    s = Search(config_from_dict(d), tmp_path / "run", evaluate=FakeEvaluator(), quiet=True, tensorboard=False)
    summary = s.run()
    events = [json.loads(line) for line in (tmp_path / "run" / "journal.jsonl").read_text().splitlines()]
    proposed = [e for e in events if e["event"] == "proposed"]
    custom = [e for e in proposed if any(m["rule"] == "add_dwres" for m in e["morphisms"])]
    assert custom, "no candidate used the plugin's rule"
    for e in custom:
        assert e["grammar"] == "custom" and e["custom_kinds"] == ["dwres"] and e["encoding"].startswith("~")
        net = load(tmp_path / "run" / "candidates" / e["id"] / "trained")  # inputs are dropped once evaluated
        assert net.code() == e["encoding"] and net.fingerprint() == e["fingerprint"]
    assert all(e["grammar"] == "paper" for e in proposed if e["encoding"][0] != "~")
    assert summary["best_code"]


def test_a_trivial_kind_after_the_first_block_verifies():
    """The case that failed before kinds had roles: a tensor-free kind placed after b0 (``stage 1 has no output tap``)."""
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class NoopSpec:
        pass

    register_kind("noop", spec=NoopSpec, role="block")(lambda spec: torch.nn.Identity())
    try:
        arch = parse("BB(1,d1,d1,d1)")
        before = compile_backbone(arch).eval()
        new = arch.insert_after("b0", "noop", NoopSpec())
        arch.verify()
        assert arch.stages()[0].blocks == ("b0", new) and arch.inputs("res2") == (new,)
        assert arch.code() == "~BB(1[noop],d1,d1,d1)" and get_kind("noop").tensors(NoopSpec()) == {}
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            a, b = before(x), compile_backbone(arch).eval()(x)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert arch.flops((64, 64)) == parse("BB(1,d1,d1,d1)").flops((64, 64))
    finally:
        unregister_kind("noop")
