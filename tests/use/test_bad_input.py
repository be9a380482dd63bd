"""Bad flags and a damaged detector.json: one line each, exit code 2, never a traceback (they printed tracebacks before)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spnas.errors import ConfigError
from tests.use.test_untrusted_dir import ROOT, make_detector_dir


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    return make_detector_dir(tmp_path_factory.mktemp("bad") / "det", [])


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("spnas: error:"), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spnas.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})


def test_bad_flags_are_one_line(det, tmp_path):
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (64, 64)).save(img)
    out = str(tmp_path / "p.json")
    one_line_error(cli("predict", str(det), str(img), "--out", out, "--batch-size", "-1", cwd=tmp_path), "--batch-size")
    one_line_error(cli("predict", str(det), str(img), "--out", out, "--device", "bogus", cwd=tmp_path), "--device bogus")
    one_line_error(cli("predict", str(det), str(img), "--out", out, "--device", "cuda", cwd=tmp_path), "--device cuda", "CUDA device")
    one_line_error(cli("predict", str(det), str(img), "--out", out, "--score-thresh", "nan", cwd=tmp_path), "--score-thresh")
    one_line_error(cli("export", str(det), "--out", str(tmp_path), cwd=tmp_path), "is a directory")
    one_line_error(cli("show", "BB(1,1,1,1)", "--image-size", "-5", cwd=tmp_path), "--image-size")


@pytest.mark.parametrize("change,field", [
    (lambda m: m.pop("classes"), "classes"),
    (lambda m: m.update(classes=[]), "classes"),
    (lambda m: m.update(classes=["a", "b"]), "categories"),
    (lambda m: m.update(head="yolo"), "head"),
    (lambda m: m.update(eval_batch_size=0), "eval_batch_size"),
    (lambda m: m.update(eval_batch_size=-1), "eval_batch_size"),
    (lambda m: m["options"].update(min_size=10**7), "options.min_size"),
    (lambda m: m.update(options=[1]), "options"),
])
def test_a_damaged_detector_json_is_one_line(tmp_path, change, field):
    import spnas

    d = make_detector_dir(tmp_path / "det", [])
    meta = json.loads((d / "detector.json").read_text())
    change(meta)
    (d / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=f"detector.json: {field}: expected"):
        spnas.load_detector(d)


@pytest.mark.parametrize("text", ["", "[1, 2]", "{not json"])
def test_an_empty_or_foreign_detector_json(tmp_path, text):
    import spnas

    d = make_detector_dir(tmp_path / "det", [])
    (d / "detector.json").write_text(text)
    with pytest.raises(ConfigError, match="detector.json: (not valid JSON|expected a JSON object)"):
        spnas.load_detector(d)
    one_line_error(cli("show", str(d), cwd=tmp_path), "detector.json")
