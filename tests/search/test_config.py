"""Every bad config gives one line naming the file, line and field, exit 2, and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spnas.search.__main__ import main

TINY = Path(__file__).with_name("tiny.yaml")
ROOT = Path(__file__).resolve().parents[2]

# (what is wrong, YAML appended to or replacing part of tiny.yaml, what the line must say)
CASES = [
    ("a word for a count", "train: {epochs: three}", "train.epochs: Input should be a valid integer, got 'three'"),
    ("a word for a rate", "train: {base_lr: fast}", "train.base_lr: expected a number, got str"),
    ("negative epochs", "train: {epochs: -2}", "train.epochs: Input should be greater than or equal to 1, got -2"),
    ("a scalar for a list", "train: {steps: 5}", "train.steps: Input should be a valid tuple, got 5"),
    ("an unknown train key", "train: {epoch: 3}", "train.epoch: unknown key"),
    ("a word for a size", "detector: {options: {min_size: abc}}", "detector.options.min_size: Input should be a valid integer, got 'abc'"),
    ("an unknown detector option", "detector: {options: {anchor: 3}}", "detector.options.anchor: unknown key"),
    ("min_size over max_size", "detector: {options: {min_size: 512, max_size: 64}}", "detector.options.min_size: expected <= max_size"),
    ("an unknown preset", "detector: {preset: nope}", "detector.preset: Input should be 'lean' or 'default', got 'nope'"),
    ("an unknown head", "detector: {head: retina}", "detector.head: Input should be 'cascade' or 'faster'"),
    ("a GPU this machine lacks", "workers: {devices: ['cuda:9']}", "workers.devices[0]: cuda:9 is not on this machine"),
    ("a device name", "workers: {devices: [tpu]}", "workers.devices[0]: expected cpu, cuda or cuda:N, got 'tpu'"),
    ("an unknown backend", "workers: {backend: slurm}", "workers.backend: Input should be 'local', 'ray' or 'inline'"),
    ("a negative timeout", "workers: {timeout_s: -1}", "workers.timeout_s: Input should be greater than or equal to 0"),
    ("zero workers", "workers: {n: 0}", "workers.n: Input should be greater than or equal to 1, got 0"),
    ("a zero image size", "data: {size: 0}", "data.size: Input should be greater than or equal to 32, got 0"),
    ("a seed past 32 bits", "seed: 1180591620717411303424", "seed: Input should be less than or equal to 4294967295"),
    ("a zero max_additions", "parallel: {max_additions: 0}", "parallel.max_additions: Input should be greater than or equal to 1, got 0"),
    ("a K of 0", "parallel: {K: 0}", "parallel.K: Input should be greater than or equal to 1"),
    ("lam 0", "search: {lam: 0}", "search.lam: Input should be greater than or equal to 1, got 0"),
    ("lam 10**12 (would spin)", "search: {lam: 1000000000000}", "search.lam: Input should be less than or equal to 256"),
    ("max_tries 0", "search: {max_tries: 0}", "search.max_tries: Input should be greater than or equal to 1"),
    ("a misspelt key", "search: {lamda: 2}", "search.lamda: unknown key"),
    ("an unknown section", "serach: {lam: 2}", "serach: unknown key"),
    ("mutations reversed", "search: {mutations: [3, 1]}", "search.mutations: expected [lo, hi] with lo <= hi, got [3, 1]"),
    ("an unknown acceptance rule", "search: {acceptance: lenient}", "search.acceptance: Input should be 'fair' or 'paper'"),
    ("a negative min_gain", "search: {min_gain: -0.1}", "search.min_gain: Input should be greater than or equal to 0"),
    ("an unknown metric", "search: {metric: mAP}", "search.metric: Input should be"),
    ("an unknown rule", "search: {morphisms: [expand, nope]}", "search.morphisms[1]: unknown morphism 'nope'"),
    ("a missing plugin", "search: {plugins: [nowhere.py]}", "search.plugins[0]: morphism plugin"),
    ("a bad code", "start: {code: 'BB(1x)'}", "start.code: at position 4 of 'BB(1x)'"),
    ("code and ir", "start: {code: 'BB(1,1,1,1)', ir: somewhere}", "start.code: expected exactly one of start.code and start.ir"),
    ("missing weights", "start: {code: 'BB(1,d1,d1,d1)', weights: nowhere.pth}", "start.weights: no such file or directory"),
    ("a missing head", "start: {code: 'BB(1,d1,d1,d1)', head: nowhere.safetensors}", "start.head: no such file or directory"),
    ("missing annotations", "data: {format: coco, train: {json: a.json}, val: {json: b.json}}", "data.train.json: no such file or directory"),
    ("voc without xml", "data: {format: voc, train: {json: a.json}, val: {xml: b}}", "data.train.xml: expected the path of the voc annotations"),
    ("ecp without labels", "data: {format: ecp, train: {xml: a}, val: {labels: b}}", "data.train.labels: expected the path of the ecp annotations"),
    ("a miss rate on shapes", "search: {metric: LAMR}", "search.metric: LAMR is a miss rate of person data"),
    ("a bool for an int", "search: {lam: true}", "search.lam: Input should be a valid integer, got True"),
    ("a float for an int", "search: {lam: 2.5}", "search.lam: Input should be a valid integer, got 2.5"),
]


def _config(tmp_path: Path, override: str) -> Path:
    import yaml

    base = yaml.safe_load(TINY.read_text())
    extra = yaml.safe_load(override)
    for k, v in extra.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    y = tmp_path / "bad.yaml"
    y.write_text(yaml.safe_dump(base, sort_keys=False))
    return y


@pytest.mark.parametrize("what,override,says", CASES, ids=[c[0] for c in CASES])
def test_bad_config_one_line_exit_2_nothing_written(what, override, says, tmp_path, capsys):
    y = _config(tmp_path, override)
    out = tmp_path / "run"
    assert main(["--ir", str(y), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith(f"spnas: error: {y}: "), err
    assert says in err, err
    assert "Traceback" not in err
    assert not out.exists(), "a bad config wrote the run directory"


def test_line_numbers_point_at_the_field(tmp_path, capsys):
    y = tmp_path / "bad.yaml"
    y.write_text(TINY.read_text().replace("  lam: 2", "  lam: 0"))
    line = next(i for i, s in enumerate(y.read_text().splitlines(), 1) if s.strip() == "lam: 0")
    assert main(["--ir", str(y), "--quiet"]) == 2
    assert f"bad.yaml: line {line}: search.lam:" in capsys.readouterr().err


@pytest.mark.parametrize("text,says", [
    ("", "the config is empty"),
    ("search: [\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping at the top, got list"),
])
def test_empty_and_broken_files(text, says, tmp_path, capsys):
    y = tmp_path / "bad.yaml"
    y.write_text(text)
    assert main(["--ir", str(y), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.strip().count("\n") == 0 and not (tmp_path / "run").exists()


def test_non_utf8_and_alias_bomb(tmp_path, capsys):
    y = tmp_path / "bad.yaml"
    y.write_bytes(b"seed: \xff\xfe\n")
    assert main(["--ir", str(y)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    bomb = "a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh"))
    y.write_text(bomb + TINY.read_text().replace("  lam: 2", "  lam: *h"))  # 9**8 ints behind one alias
    assert main(["--ir", str(y)]) == 2
    err = capsys.readouterr().err
    assert "search.lam: Input should be a valid integer" in err and len(err) < 600  # the value is shown cut short


def test_real_cli_and_schema(tmp_path):
    y = _config(tmp_path, "search: {lam: 0}")
    p = subprocess.run([sys.executable, "-m", "spnas.search", "--ir", str(y), "--out", str(tmp_path / "x")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "search.lam:" in p.stderr
    p = subprocess.run([sys.executable, "-m", "spnas.search", "--schema"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    schema = json.loads(p.stdout)
    props = schema["properties"]
    assert {"start", "data", "detector", "train", "search", "parallel", "reignite", "workers", "seed"} <= set(props)
    search = schema["$defs"]["SerialConfig"]["properties"]
    assert search["acceptance"]["default"] == "fair" and search["n_stuck"]["default"] == 20


def test_the_examples_validate():
    import yaml

    from spnas.search import load_config
    from spnas.search.config import SearchConfig

    load_config(ROOT / "examples" / "quickstart.yaml")
    load_config(ROOT / "examples" / "paper.yaml")
    SearchConfig.model_validate(yaml.safe_load((ROOT / "examples" / "coco_gpu.yaml").read_text()))  # its GPUs and COCO files are not here


def test_paper_example_is_the_papers_settings():
    from spnas.search import load_config

    c = load_config(ROOT / "examples" / "paper.yaml")
    s = c.search
    assert (s.n_stuck, s.n_reignite, s.mutations, tuple(s.morphisms), s.max_shift, c.parallel.K) == (20, 2, (3, 3), ("swap", "expand", "add_stage"), 3, 3)
    assert (s.min_blocks, s.max_blocks, s.max_stages) == (8, 60, 7)


def test_an_os_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["--ir", str(TINY), "--out", str(blocker / "run"), "--quiet"]) == 2  # the run directory cannot be made
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Not a directory" in err and "Traceback" not in err, err
    with pytest.raises(OSError):
        main(["--ir", str(TINY), "--out", str(blocker / "run"), "--quiet", "--debug"])


def test_data_with_no_usable_annotation_stops_before_anything_is_written(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        Image.new("RGB", (64, 64)).save(tmp_path / split / "a.png")
        (tmp_path / split / "a.xml").write_text(
            "<annotation><filename>a.png</filename><size><width>64</width><height>64</height></size><object><name>tree</name>"
            "<bndbox><xmin>5</xmin><ymin>5</ymin><xmax>5</xmax><ymax>9</ymax></bndbox></object></annotation>")  # zero width
    y = _config(tmp_path, f"data: {{format: voc, train: {{xml: {tmp_path / 'train'}}}, val: {{xml: {tmp_path / 'val'}}}}}")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="zero or negative size"):
        assert main(["--ir", str(y), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{tmp_path / 'train'}: the train split has no usable annotation" in err, err
    assert not out.exists()
    with pytest.raises(Exception, match="box .* has zero or negative size"):  # strict: the first problem, named
        main(["--ir", str(_config(tmp_path, f"data: {{format: voc, strict: true, train: {{xml: {tmp_path / 'train'}}}, "
                                            f"val: {{xml: {tmp_path / 'val'}}}}}")), "--out", str(out), "--quiet", "--debug"])
