import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spnas.detect import compile_backbone
from spnas.errors import MorphismError
from spnas.ir import Arch, add_subnet, get_kind, parse
from spnas.ops import Space, check, get_morphism, list_morphisms, load_plugin, register_morphism, relative_error, unregister_morphism

load_plugin("examples/morphisms/dilate.py")
load_plugin("examples/morphisms/squeeze_excite.py")  # a rule that brings its own node kind, "se"
RULES = list_morphisms()


def randomise_bn(arch: Arch, seed: int) -> Arch:
    """Random BN statistics and affine parameters (fuse BNs stay zero: a subnet is a copy)."""
    g = torch.Generator().manual_seed(seed)
    for key, t in list(arch.weights.items()):
        node, name = key.split("/")
        if arch.kind(node) == "fuse":
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "running_mean":
            arch.set_tensors(node, {name: torch.randn(t.shape, generator=g) * 0.1})
        elif leaf == "running_var":
            arch.set_tensors(node, {name: torch.rand(t.shape, generator=g) + 0.5})
        elif leaf == "weight" and t.dim() == 1:
            arch.set_tensors(node, {name: torch.rand(t.shape, generator=g) + 0.5})
        elif leaf == "bias":
            arch.set_tensors(node, {name: torch.randn(t.shape, generator=g) * 0.1})
    return arch


@st.composite
def architectures(draw):
    prefix = draw(st.sampled_from(["BB", "BNB", "XB"]))
    n_stages = draw(st.integers(4, 7))
    stages = []
    doublings = 0
    for i in range(n_stages):
        blocks = ""
        for j in range(draw(st.integers(1, 3))):
            d = doublings < 3 and draw(st.booleans()) and (j == 0 or draw(st.booleans()))
            doublings += d
            blocks += "d" if d else "1"
        stages.append(blocks)
    arch = randomise_bn(parse(f"{prefix}({','.join(stages)})", seed=draw(st.integers(0, 3))), draw(st.integers(0, 100)))
    if draw(st.booleans()):  # plugin-kind nodes on the chain, already trained (a real gate): every rule must cope
        g = torch.Generator().manual_seed(draw(st.integers(0, 100)))
        for b in draw(st.lists(st.sampled_from(arch.main_chain()), max_size=3, unique=True)):
            se = arch.insert_after(b, "se", get_kind("se").spec_type(arch.specs()[b].channels), gen=g)
            arch.set_tensors(se, {k: torch.randn(t.shape, generator=g) * 0.3 for k, t in arch.tensors(se).items()})
    if draw(st.booleans()):  # a parallel net as the parallel level builds it: subnets copy the trained stage
        for i in range(n_stages):  # the first stage included: its subnets fuse into the stem's output
            for _ in range(draw(st.integers(0, 1))):
                add_subnet(arch, i)
    return arch


@pytest.mark.parametrize("name", RULES)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(arch=architectures(), pick=st.integers(0, 10_000))
def test_every_rule_on_random_architectures(name, arch, pick):
    """3 random architectures a rule; ``test_every_rule_on_more_random_architectures`` (slow, in CI) tries 8 more."""
    check_rule(name, arch, pick)


@pytest.mark.slow
@pytest.mark.parametrize("name", RULES)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(arch=architectures(), pick=st.integers(0, 10_000))
def test_every_rule_on_more_random_architectures(name, arch, pick):
    check_rule(name, arch, pick)


def check_rule(name, arch, pick):
    m = get_morphism(name)
    sites = m.sites(arch)
    if not sites:
        return
    site = sites[pick % len(sites)]
    # The rule runs on float64 weights, so its arithmetic alone is measured: on float32 weights a
    # widen's split parts round once each (relative ~6e-8), which train-mode BN over a 7-stage net's
    # 1x1 last stages amplifies past 1e-5 for about one random net in 150.
    arch = arch.with_weights({k: v.double() if v.is_floating_point() else v for k, v in arch.weights.items()})
    # 6 images of 128 px: with 2 images a 7-stage net's last stages are 1x1, and train-mode BN
    # normalises 2 nearly equal values
    x = torch.randn(6, 3, 128, 128, generator=torch.Generator().manual_seed(pick), dtype=torch.float64)
    r = check(m, arch, x, site=site, rng=np.random.default_rng(pick))
    after = r.after
    after.verify()
    assert after.is_valid()
    if m.exact:
        assert r.eval_error <= 1e-9, (name, site, r.eval_error)
        assert r.train_error <= 1e-9, (name, site, r.train_error)
    else:
        body = compile_backbone(after)
        out = body(x)
        for k, (c, s) in body.output_shape().items():
            assert out[k].shape[1] == c and out[k].shape[2] == -(-128 // s)
    # surviving nodes keep their ids; untouched weights stay bit-identical
    touched = set(site) if isinstance(site, tuple) else {site}
    if name == "widen":
        chain = arch.main_chain()
        touched.add(chain[chain.index(site) - 1])
    for key, t in arch.weights.items():
        node = key.split("/")[0]
        assert node in after
        if node not in touched:
            assert after.weights[key] is t or torch.equal(after.weights[key], t), key


def test_chain_of_20_exact_morphisms_from_resnet18():
    rng = np.random.default_rng(7)
    arch = randomise_bn(parse("BB(11,d1,d1,d1)", seed=1), 3)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    serial = ["expand", "widen", "add_stage"]
    cur, used = arch, []
    for step in range(20):
        names = serial if step < 17 else ["add_subnet"]
        options = [(n, s) for n in names for s in get_morphism(n).sites(cur)]
        n, s = options[int(rng.integers(len(options)))]
        cur = get_morphism(n).apply(cur, s, rng)
        used.append(n)
    assert {"expand", "widen", "add_stage", "add_subnet"} <= set(used)
    err = 0.0
    for train in (False, True):
        with torch.no_grad():
            a = dict(compile_backbone(arch).train(train)(x))
            b = dict(compile_backbone(cur).train(train)(x))
        err = max(err, relative_error(a, b))
    assert err < 1e-4, err


def test_swap_and_add_stage_bounded():
    rng = np.random.default_rng(0)
    arch = parse("BNB(111,d111,d11111,d11)")
    seen_stages = set()
    for _ in range(3):
        arch = get_morphism("add_stage").apply(arch, "end", rng)
        seen_stages.add(len(arch.stages()))
    assert seen_stages == {5, 6, 7}
    assert get_morphism("add_stage").sites(arch) == []
    with pytest.raises(MorphismError, match="add_stage.*not a site"):
        get_morphism("add_stage").apply(arch, "end", rng)
    for _ in range(30):
        arch = get_morphism("swap").apply(arch, get_morphism("swap").sites(arch)[int(rng.integers(3))], rng)
        assert len(arch.stages()) == 7 and all(st.blocks for st in arch.stages())
    for _ in range(60):
        s = get_morphism("expand").sites(arch)
        if not s:
            break
        arch = get_morphism("expand").apply(arch, s[0], rng)
    assert len(arch.main_chain()) == 60
    assert get_morphism("expand").sites(arch) == []
    small = Space(max_blocks=20, max_stages=5)
    assert get_morphism("expand").sites(parse("BB(1111111111,d11111,d1111,d1)"), small) == []
    assert get_morphism("add_stage").sites(parse("BB(11,d1,d1,d1,1)"), small) == []


def test_widen_reaches_paper_channel_layouts():
    rng = np.random.default_rng(0)
    w = get_morphism("widen")
    arch = parse("BNB(11111111,dd111,111,d111,1111)")
    for pos in [8, 7, 6, 5, 4, 9, 16]:  # each step moves the doubling at `pos` one block earlier
        arch = w.apply(arch, arch.main_chain()[pos], rng)
    assert arch.encode() == "BNB(111d1111,d1111,11d,1111,1111)"
    channels = [c for c, _ in compile_backbone(arch).output_shape().values()]
    assert channels == [c for c, _ in compile_backbone(parse("BNB(111d1111,d1111,11d,1111,1111)")).output_shape().values()]


def test_widen_changes_channels_by_replication():
    arch = randomise_bn(parse("BB(11,d1,d1,d1)"), 0)
    arch = arch.with_weights({k: v.double() if v.is_floating_point() else v for k, v in arch.weights.items()})  # exact arithmetic
    r = check("widen", arch, torch.randn(2, 3, 64, 64, dtype=torch.float64), site="b2")
    assert r.after.encode() == "BB(1d,11,d1,d1)"
    assert compile_backbone(r.after).output_shape()["res2"] == (128, 4)
    assert r.error < 1e-10


def test_bad_user_rules_named():
    with pytest.raises(MorphismError, match="'expand' is already registered"):
        register_morphism("expand", exact=True, sites=lambda a: [])(lambda a, s, r: a)
    with pytest.raises(MorphismError, match="'bad_sig': apply must take"):
        register_morphism("bad_sig", exact=True, sites=lambda a: [])(lambda a: a)
    with pytest.raises(MorphismError, match="'bad_sites': sites must take"):
        register_morphism("bad_sites", exact=True, sites=lambda: [])
    with pytest.raises(MorphismError, match="'bad_exact': exact must be"):
        register_morphism("bad_exact", exact="yes", sites=lambda a: [])

    @register_morphism("breaks_graph", exact=True, sites=lambda a: a.main_chain()[:1])
    def breaks_graph(arch, site, rng):
        spec = arch.spec(site)
        arch.set_spec(site, dataclasses.replace(spec, planes=spec.planes + 1, shortcut="conv_bn"),
                      {k: v for k, v in arch.tensors(site).items()})
        return arch

    @register_morphism("returns_none", exact=True, sites=lambda a: ["x"])
    def returns_none(arch, site, rng):
        return None

    try:
        with pytest.raises(MorphismError, match="'breaks_graph' at 'b0' produced an invalid graph: node 'b1'"):
            get_morphism("breaks_graph").apply(parse("BB(1,d1)"), "b0")
        with pytest.raises(MorphismError, match="'returns_none': expected apply to return an Arch, got NoneType"):
            get_morphism("returns_none").apply(parse("BB(1,d1)"), "x")
        with pytest.raises(MorphismError, match="'expand': 'nope' is not a site"):
            get_morphism("expand").apply(parse("BB(1,d1)"), "nope")
    finally:
        unregister_morphism("breaks_graph")
        unregister_morphism("returns_none")


def test_apply_leaves_input_untouched():
    arch = parse("BB(11,d1,d1,d1)")
    before = {k: v.clone() for k, v in arch.weights.items()}
    fp = arch.fingerprint()
    for name in RULES:
        m = get_morphism(name)
        for s in m.sites(arch)[:2]:
            m.apply(arch, s, np.random.default_rng(0))
    assert arch.fingerprint() == fp
    assert all(torch.equal(before[k], v) for k, v in arch.weights.items())


def test_add_subnet_refuses_trained_parallel_nets():
    arch = parse("BB(11,d1,d1,d1)(0,1,0,0)")
    assert get_morphism("add_subnet").sites(arch) == [0, 1, 2, 3]  # the first stage too (its fuse resizes to the stem)
    fuse = arch.stages()[1].subnets[0].fuse
    arch.set_tensors(fuse, {"bn.weight": torch.full_like(arch.weights[f"{fuse}/bn.weight"], 0.1)})
    assert get_morphism("add_subnet").sites(arch) == []


def test_widen_replicas_diverge_under_training():
    """Random shares give the replicas different gradients: after a few SGD steps they differ (equal 1/2 splits never do)."""
    from spnas.ops.weights import wider_map

    arch = parse("BB(11,d1,d1,d1)")
    wide = get_morphism("widen").apply(arch, "b2", np.random.default_rng(0))  # b1 goes 64 -> 128 channels: 64 pairs of replicas
    body = compile_backbone(wide).train()
    conv = dict(body.named_modules())["b1"].conv1
    pairs = wider_map(64, 128)  # new channel i copies old channel pairs[i]: replicas are i and i + 64
    w0 = conv.weight.detach().clone()
    assert torch.equal(w0[:64], w0[64:])  # exact replicas at apply
    opt = torch.optim.SGD(body.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randn(4, 3, 64, 64, generator=g)
        loss = sum((y ** 2).mean() for y in body(x).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = conv.weight.detach()
    assert pairs.tolist() == list(range(64)) * 2
    gap = (w[:64] - w[64:]).abs().amax(dim=(1, 2, 3))
    assert (gap > 1e-6).all(), f"{int((gap <= 1e-6).sum())} replica pairs stayed identical"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.integers(4, 6), data=st.data())
def test_parallel_codes_with_first_stage_subnets_are_exact_at_creation(stages, data):
    """Any parallel code, first stage included, computes exactly what its serial net computes."""
    from spnas.detect import compile_backbone

    serial = ",".join(["11", "d1", "d1"] + ["1"] * (stages - 3))  # at most 256 channels: 6 stages x 4 copies stay small
    counts = data.draw(st.lists(st.integers(0, 3), min_size=stages, max_size=stages).filter(any))
    counts[0] = max(counts[0], data.draw(st.integers(1, 3)))  # always a first-stage subnet
    code = f"BB({serial})({','.join(map(str, counts))})"
    base = randomise_bn(parse(f"BB({serial})"), 1)  # "trained" weights; the subnets copy them, as the rule does
    par = base.clone()
    for i, k in enumerate(counts):
        for _ in range(k):
            add_subnet(par, i)
    assert par.encode() == code
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(stages), dtype=torch.float64)
    for train in (False, True):
        a = compile_backbone(base).double().train(train)
        b = compile_backbone(par).double().train(train)
        with torch.no_grad():
            ya, yb = a(x), b(x)
        for name in ya:
            torch.testing.assert_close(yb[name], ya[name], rtol=0, atol=1e-9 * ya[name].abs().max().item())


def test_the_library_space_and_the_config_agree():
    """Space()'s bounds are the config's defaults (max_shift was 1 in the library and 3 in the config)."""
    import dataclasses

    from spnas.search.config import ParallelConfig, SerialConfig

    lib = dataclasses.asdict(Space())
    s, p = SerialConfig(), ParallelConfig()
    assert lib == {"min_blocks": s.min_blocks, "max_blocks": s.max_blocks, "max_stages": s.max_stages,
                   "max_subnets": p.K, "max_shift": s.max_shift}


@pytest.mark.parametrize("k", [1, 2, 3])
def test_swap_moves_a_boundary_by_k_blocks(k):
    """The paper's Figure 2: a stage boundary moves by up to max_shift blocks, either way."""
    arch = parse("BB(1111,d1111,d1,d1)", seed=0)
    before = [len(st.blocks) for st in arch.stages()]
    m = get_morphism("swap")
    sites = m.sites(arch, Space(max_shift=3))
    moved = set()
    for site in sites:
        child = m.apply(arch, site, np.random.default_rng(0), Space(max_shift=3))
        after = [len(st.blocks) for st in child.stages()]
        moved.add(tuple(a - b for a, b in zip(after, before)))
    assert (-k, k, 0, 0) in moved and (k, -k, 0, 0) in moved  # the first boundary, left and right by k
    assert not any(abs(d) > 3 for delta in moved for d in delta)
    assert len(m.sites(arch, Space(max_shift=k))) < len(sites) or k == 3
