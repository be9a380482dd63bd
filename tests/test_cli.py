import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ir_show_json():
    p = run("spnas.ir", "show", "BNB(111,d111,d11111,d11)", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["code"] == "BNB(111,d111,d11111,d11)" and d["blocks"] == 16 and abs(d["gmacs"] - 4.087) < 1e-3
    assert [s["stride"] for s in d["stages"]] == [4, 8, 16, 32]


def test_ir_show_bad_code_one_line():
    p = run("spnas.ir", "show", "BB(11,,d1)")
    assert p.returncode == 2 and "position 6" in p.stderr and "Traceback" not in p.stderr


def test_train_flags_are_held_to_the_search_configs_bounds(tmp_path):
    """Issue 24: spnas train's schedule is checked against the bounds a search's train: section has (one place)."""
    data = tmp_path / "data.yaml"
    data.write_text("data:\n  format: shapes\n  n_train: 4\n  n_val: 2\n  size: 64\n")
    for flag, value, said in (("--epochs", "0", "--epochs: Input should be greater than or equal to 1, got 0"),
                              ("--lr", "-0.1", "--lr: Input should be greater than 0, got -0.1"),
                              ("--accumulate", "0", "--accumulate: Input should be greater than or equal to 1, got 0")):
        p = run("spnas.train", "--ir", "BB(1,d1,d1,d1)", "--data", str(data), "--out", str(tmp_path / "out"), flag, value)
        assert p.returncode == 2 and said in p.stderr and "Traceback" not in p.stderr, p.stderr[-1000:]
        assert not (tmp_path / "out").exists()


def test_train_cli(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text("data:\n  format: shapes\n  n_train: 4\n  n_val: 2\n  size: 64\n")
    p = run("spnas.train", "--ir", "BB(1,d1,d1,d1)", "--data", str(data), "--out", str(tmp_path / "out"), "--scheme", "fast",
            "--epochs", "1", "--batch-size", "2", "--size", "64", "--head", "faster")
    assert p.returncode == 0, p.stderr[-2000:]
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "AP" in m["metrics"] and m["iterations"] == 2
    for f in ("arch/arch.yaml", "checkpoint/model.safetensors", "checkpoint/state.json"):
        assert (tmp_path / "out" / f).is_file()
    assert list((tmp_path / "out" / "tb").glob("events.out.tfevents.*"))
    # issue 27, item 6: the trained backbone as one plain PyTorch file (checked against the compiled one as it is written)
    p = run("spnas.cli", "export", str(tmp_path / "out"), "--format", "python", "--out", str(tmp_path / "py"))
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    assert res["checked"] and (tmp_path / "py" / "found_backbone.py").is_file() and (tmp_path / "py" / "found_backbone.pt").is_file()
    assert "BB(1,d1,d1,d1)" in (tmp_path / "py" / "found_backbone.py").read_text()
    # issue 27, item 4: the paper's latency protocol on the trained detector itself and its validation images
    p = run("spnas.bench", str(tmp_path / "out"), "--images", "6", "--no-inductor")
    assert p.returncode == 0, p.stderr[-2000:]
    row = json.loads(p.stdout.strip().splitlines()[-1])["rows"][0]
    assert row["timed"] == 3 and row["distinct_images"] == 2 and row["found_ms"] > 0 and row["resnet50_fpn_ms"] > 0
    assert row["input"] == "64..64"  # the run's detector settings, not the default preset's
    p = run("spnas.bench", "BB(1,d1,d1,d1)", "--images", "4")
    assert p.returncode == 2 and "--images measures a found detector" in p.stderr


def test_bench_cli():
    p = run("spnas.bench", "BB(1,d1,d1,d1)", "--size", "64", "--repeats", "2", "--classes", "3", "--no-inductor")
    assert p.returncode == 0, p.stderr[-2000:]
    row = json.loads(p.stdout.strip().splitlines()[-1])["rows"][0]
    assert row["code"] == "BB(1,d1,d1,d1)" and row["backbone_ms"] > 0 and row["detector_ms"] > 0 and row["torchscript_ms"] > 0
    assert "inductor_ms" not in row


@pytest.mark.slow  # in .ci/run
def test_multi_scale_training_is_for_the_final_training(tmp_path):
    """Issue 27, item 3: `spnas train --train-scales` turns on multi-scale training for the final training only;
    the COCO example's search (its fast scheme) trains at one scale, as the paper does."""
    import yaml

    data = tmp_path / "data.yaml"
    data.write_text("data:\n  format: shapes\n  n_train: 4\n  n_val: 2\n  size: 64\n")
    p = run("spnas.train", "--ir", "BB(1,d1,d1,d1)", "--data", str(data), "--out", str(tmp_path / "out"), "--scheme", "fast",
            "--epochs", "1", "--batch-size", "2", "--size", "64", "--head", "faster", "--train-scales", "0.75,1.25")
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "detector.json").read_text())["options"]["train_scales"] == [0.75, 1.25]
    p = run("spnas.train", "--ir", "BB(1,d1,d1,d1)", "--data", str(data), "--out", str(tmp_path / "bad"), "--train-scales", "big")
    assert p.returncode == 2 and "--train-scales: expected factors" in p.stderr and "Traceback" not in p.stderr
    coco = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "coco_gpu.yaml").read_text())
    assert "train_scales" not in coco["detector"].get("options", {})
