"""A user's rule that raises, returns nothing, runs away, exits or breaks its exactness: the search's answer to each."""

from __future__ import annotations

import time

import pytest

from spnas.errors import ConfigError
from spnas.ops import get_morphism, load_plugin, register_morphism, unregister_morphism
from tests.search.test_loop import of, run


@pytest.fixture
def rule():
    names = []

    def make(name, fn, exact=False):
        expand = get_morphism("expand")
        register_morphism(name, exact=exact, sites=lambda arch, space: expand.sites(arch, space))(fn)
        names.append(name)
        return name

    yield make
    for n in names:
        unregister_morphism(n)


def test_a_rule_that_raises_or_returns_nothing_fails_that_child_not_the_search(tmp_path, rule):
    def boom(arch, site, rng):
        raise ValueError("a bug in my rule")

    def nothing(arch, site, rng):
        return None

    rule("boom_rule", boom)
    rule("nothing_rule", nothing)
    summary, evs, _ = run(tmp_path, search={"morphisms": ["expand", "boom_rule", "nothing_rule"], "max_generations": 3})
    failed = of(evs, "rule_failed")
    assert failed and {e["rule"] for e in failed} <= {"boom_rule", "nothing_rule"}
    assert any("a bug in my rule" in e["reason"] for e in failed) or any("expected apply to return an Arch" in e["reason"] for e in failed)
    assert of(evs, "done") and summary["candidates"] >= 2
    _, again, _ = run(tmp_path, resume=True, search={"morphisms": ["expand", "boom_rule", "nothing_rule"], "max_generations": 3})
    assert again == evs  # the resume replays the same failures, journaled once


def test_a_rule_that_runs_away_or_exits_is_that_rules_failure(tmp_path, rule, monkeypatch):
    import spnas.search.runner as runner

    monkeypatch.setattr(runner, "RULE_SECONDS", 0.5)

    def forever(arch, site, rng):
        while True:
            time.sleep(0.01)

    def leave(arch, site, rng):
        raise SystemExit(3)

    rule("forever_rule", forever)
    rule("exit_rule", leave)
    t0 = time.time()
    _, evs, _ = run(tmp_path, search={"morphisms": ["expand", "forever_rule", "exit_rule"], "max_generations": 2})
    reasons = " ".join(e["reason"] for e in of(evs, "rule_failed"))
    assert "ran longer than" in reasons or "sys.exit(3)" in reasons
    assert of(evs, "done") and time.time() - t0 < 120


def test_a_rule_declared_exact_that_is_not_is_refused_on_first_use(tmp_path, rule):
    expand = get_morphism("expand")

    def liar(arch, site, rng):
        out = expand.fn(arch, site, rng)
        b = out.main_chain()[-1]
        t = out.tensors(b)
        key = next(k for k in t if k.endswith("bn2.bias") or k.endswith("bn3.bias"))
        out.set_tensors(b, {key: t[key] + 1.0})  # not function-preserving
        return out

    rule("liar_rule", liar, exact=True)
    with pytest.raises(ConfigError, match=r"morphism 'liar_rule' .* is registered as exact but changed the net's outputs by"):
        run(tmp_path, search={"morphisms": ["liar_rule"], "max_generations": 1})
    honest = rule("honest_rule", lambda arch, site, rng: expand.fn(arch, site, rng), exact=True)
    _, evs, _ = run(tmp_path, name="honest", search={"morphisms": [honest], "max_generations": 1})
    assert of(evs, "done")


def test_a_plugin_that_calls_sys_exit_while_loading_gets_a_message(tmp_path):
    f = tmp_path / "exits.py"
    f.write_text("import sys\nsys.exit(5)\n")
    with pytest.raises(ConfigError, match=r"exits.py: called sys.exit\(5\) while loading"):
        load_plugin(str(f))
