"""Issue 26, item 1: a search whose candidates train as 2 ranks of torch.distributed (gloo on the CPU).

Against the same search on 1 rank with the doubled batch (frozen normalisation: 2 x 2 trains as
1 x 4, tests/detect/test_distributed.py): the same decisions. A rank SIGKILLed mid-candidate is the
machine's failure, retried; the search killed midway resumes to the same result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spnas.search import Search, config_from_dict
from tests.search.faults import rank_killing_evaluate
from tests.search.test_loop import Killed, events, of

pytestmark = pytest.mark.slow

TINY = yaml.safe_load((Path(__file__).parent / "tiny.yaml").read_text())


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    return start_net(tmp_path_factory.mktemp("start"))


def start_net(root: Path) -> Path:
    """A start net with trained BatchNorm statistics (frozen statistics at their initial values learn nothing here),
    as a detection search starts from a pretrained net."""
    import torch

    from spnas.detect import lift
    from spnas.detect.data import generate_shapes, load_coco
    from spnas.detect.detector import build_detector
    from spnas.detect.train import TrainConfig, train_detector
    from spnas.ir import parse, save

    train = load_coco(generate_shapes(root / "data", n_images=16, size=64, seed=0, split="train"))
    torch.manual_seed(0)
    arch = parse(TINY["start"]["code"])
    model = build_detector(arch, train.num_classes, "faster", preset="lean", **TINY["detector"]["options"])
    train_detector(model, train, None, TrainConfig(epochs=6, batch_size=4, base_lr=0.16, warmup_iters=1), quiet=True)
    save(lift(arch, model.backbone.body), root / "net")
    return root / "net"


def config(start: Path, ranks: int, batch: int):
    d = json.loads(json.dumps(TINY))
    d["start"] = {"ir": str(start)}
    # frozen statistics, and per-image sampler quotas every image fills: then a rank's losses normalise as the
    # big batch's (with lean's 128 RoIs an image, a 64 px image may have fewer proposals: the loss's
    # denominator differs between 2 x 2 and 1 x 4, and so do the metrics, by ~2 % here: measured)
    d["detector"]["options"].update(norm="frozen", rpn_batch_size_per_image=32, box_batch_size_per_image=16)
    d["data"]["n_train"] = 16
    d["train"].update(batch_size=batch, epochs=2, loader_workers=0, base_lr=0.04)
    d["search"].update(n_reignite=0)
    d["parallel"]["enabled"] = False
    d["workers"].update(backend="inline", devices_per_candidate=ranks, threads=2)
    return config_from_dict(d)


def decisions(evs):
    return [(e["event"], e["id"], e.get("generation")) for e in evs if e["event"] in ("accepted", "rejected", "best", "stopped")]


def test_two_ranks_decide_as_one_with_the_doubled_batch(start, tmp_path):
    one = Search(config(start, 1, 4), tmp_path / "one", quiet=True, tensorboard=False).run()
    ref = events(tmp_path / "one")
    assert max(e["metric"] for e in of(ref, "evaluated")) > 0  # the nets learn something: the decisions mean something

    def kill(ev):  # the search itself killed as generation 2 begins (after generation 1's retry)
        if ev["event"] == "generation" and ev["generation"] == 2:
            raise Killed

    with pytest.raises(Killed):
        Search(config(start, 2, 2), tmp_path / "two", quiet=True, tensorboard=False, evaluate=rank_killing_evaluate, listeners=(kill,)).run()
    two = Search(config(start, 2, 2), tmp_path / "two", quiet=True, tensorboard=False, evaluate=rank_killing_evaluate, resume=True).run()
    evs = events(tmp_path / "two")
    # the killed rank: the machine's failure, retried at once, never counted
    killed = (tmp_path / "two" / "candidates" / "g001c0" / "rank-killed-pid").read_text()
    retried = of(evs, "retried", id="g001c0")
    assert killed and retried and "rank 1 of 2 lost" in retried[0]["after"], retried
    assert [e["id"] for e in of(evs, "failed")] == ["g001c0"] and of(evs, "failed")[0]["kind"] == "machine"
    # the same decisions as one rank with the doubled batch
    assert decisions(evs) == decisions(ref)
    # generation 1 (2 epochs from the start): the same metrics to rounding. Further down a line the two drift
    # apart (generation 2, 4 epochs on: g002p 0.233 against 0.236 AP50, g002c0 0.189 against 0.159, measured):
    # the all-reduce adds the gradients in another order, and a proposal crossing an IoU threshold turns that
    # rounding into a step (tests/detect/test_distributed.py shows it at step 8 with sync)
    metric = {e["id"]: e["metric"] for e in of(ref, "evaluated")}
    for e in of(evs, "evaluated"):
        if e["id"] == "start" or e["id"].startswith("g001"):
            assert e["metric"] == pytest.approx(metric[e["id"]], abs=1e-6), e["id"]
        assert e["training"] == {"ranks": 2, "batch_per_device": 2, "accumulate": 1, "norm": "frozen", "global_batch": 4}
    assert of(ref, "evaluated")[0]["training"]["ranks"] == 1
    assert two["best_id"] == one["best_id"] and two["best_code"] == one["best_code"]
