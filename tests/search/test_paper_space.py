"""Issue 27, item 1: the paper's search space is reachable with the paper's configuration.

The paper's Table 7 nets have 6 stages grown from ResNet-18's 4; with swap and expand alone no net
ever leaves its start's stage count. ``examples/paper.yaml`` (and the config's default) add
``add_stage``; a search with that configuration and the formula evaluator, whose quality rewards
stages, reaches a 6-stage net within the paper's bounds.
"""

from __future__ import annotations

import pytest

from pathlib import Path

import yaml

from spnas.ir import load
from spnas.ops import DEFAULT_SPACE
from spnas.search import Search
from spnas.search.config import SerialConfig, config_from_dict
from tests.search.fake import FakeEvaluator

ROOT = Path(__file__).resolve().parents[2]


def stages(arch) -> float:
    return 0.05 * len(arch.stages())


@pytest.mark.slow  # in .ci/run
def test_the_papers_configuration_grows_a_six_stage_net_within_its_bounds(tmp_path):
    d = yaml.safe_load((ROOT / "examples" / "paper.yaml").read_text())
    d["start"]["code"] = "BB(11,d1,d1,d1)"  # ResNet-18, as Table 7 starts
    d["data"].update(n_train=4, n_val=2, size=64)
    d["search"].update(max_generations=8, n_stuck=100)
    d["parallel"]["enabled"] = False
    d["workers"] = {"backend": "inline"}
    cfg = config_from_dict(d, where="paper.yaml")
    assert "add_stage" in cfg.search.morphisms and cfg.search.max_stages == 7
    summary = Search(cfg, tmp_path / "run", evaluate=FakeEvaluator(stages), quiet=True, tensorboard=False).run()
    best = load(tmp_path / "run" / "best" / "arch")
    assert len(best.stages()) >= 6, summary["best_code"]
    assert len(best.stages()) <= cfg.search.max_stages and cfg.search.min_blocks <= len(best.main_chain()) <= cfg.search.max_blocks


def test_the_library_and_the_config_agree_on_the_space():
    s = SerialConfig()
    assert (DEFAULT_SPACE.min_blocks, DEFAULT_SPACE.max_blocks, DEFAULT_SPACE.max_stages, DEFAULT_SPACE.max_shift) == (
        s.min_blocks, s.max_blocks, s.max_stages, s.max_shift)
