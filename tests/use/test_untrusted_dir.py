"""A run or detector directory someone sent you never runs code of its own, and its paths stay inside it.

``detector.json`` records the plugin files its net's node kinds need; every command that reads it
(``show``, ``bench``, ``train``, ``predict``, ``export``, ``audit``, :func:`spnas.load_detector`) imports
only the files the user names with ``--plugin``. The marker file proves the plugin never ran.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spnas.detect.detector import build_detector, resolve_options
from spnas.detect.infer import DETECTOR_WEIGHTS, describe_detector, write_description
from spnas.errors import ConfigError
from spnas.ir import parse, save
from spnas.ir.io import write_tensors

ROOT = Path(__file__).resolve().parents[2]
CODE = "BB(1,1,1,1)"


def make_detector_dir(d: Path, plugins: list[str]) -> Path:
    arch = parse(CODE, seed=0)
    opts = resolve_options("lean", min_size=64, max_size=64, representation_size=32, fpn_channels=16)
    model = build_detector(arch, 1, "faster", preset="lean", min_size=64, max_size=64, representation_size=32, fpn_channels=16)
    save(arch, d / "arch")
    write_tensors({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, d / DETECTOR_WEIGHTS)
    meta = describe_detector(code=CODE, classes=["thing"], label_to_cat={1: 1}, head="faster", options=opts, eval_batch_size=1,
                             plugins=plugins, metric={"name": "AP", "value": 0.0, "split": "val", "id": "start"})
    write_description(d, meta)
    return d


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "MARKER"
    plugin = tmp_path / "evil.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    d = make_detector_dir(tmp_path / "det", [str(plugin)])
    # a relative path too: resolved against the current directory, it used to run from wherever the user stood
    meta = json.loads((d / "detector.json").read_text())
    meta["plugins"].append("evil.py")
    (d / "detector.json").write_text(json.dumps(meta))
    return d, marker, tmp_path


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "spnas.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


@pytest.mark.slow  # every command on a run: a minute (in .ci/run)
def test_no_command_imports_a_plugin_the_directory_names(evil):
    d, marker, cwd = evil
    img = cwd / "x.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (120, 90, 60)).save(img)
    runs = {
        "show": cli("show", str(d), cwd=cwd),
        "bench": cli("bench", str(d), "--image-size", "64", "--repeats", "1", "--no-inductor", cwd=cwd),
        "predict": cli("predict", str(d), str(img), "--out", str(cwd / "p.json"), cwd=cwd),
        "export": cli("export", str(d), "--format", "torchscript", "--out", str(cwd / "d.pt"), cwd=cwd),
    }
    # these two stop later for other reasons (no data recorded, no journal), after reading the directory
    runs_that_stop = {"train": cli("train", str(d), "--epochs", "1", "--out", str(cwd / "t"), cwd=cwd), "audit": cli("audit", str(d), cwd=cwd)}
    import spnas

    model = spnas.load_detector(d)
    assert model.spnas_meta["code"] == CODE
    assert not marker.exists(), {k: r.stderr[-500:] for k, r in {**runs, **runs_that_stop}.items()}
    for name, r in runs.items():  # the net's kinds are built in, so each command works without the plugin
        assert r.returncode == 0, (name, r.stderr[-1500:])
    for name, r in runs_that_stop.items():
        assert r.returncode == 2 and "error:" in r.stderr.strip().splitlines()[-1], (name, r.stderr[-1500:])


@pytest.mark.slow  # in .ci/run
def test_a_net_that_needs_a_plugin_says_which_flag_to_pass(tmp_path):
    """A net with a plugin kind: without --plugin, one line naming the recorded file; with it, it loads."""
    src = ROOT / "examples" / "morphisms" / "squeeze_excite.py"
    plugin = tmp_path / "se_plugin.py"
    shutil.copy(src, plugin)
    code = f'''
import json, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
from spnas.ops import load_plugin, get_morphism
from spnas.ir import parse, save
load_plugin({str(plugin)!r})
a = parse("BB(1,1,1,1)", seed=0)
m = get_morphism("add_se")
a = m.apply(a, m.sites(a)[0], np.random.default_rng(0))
save(a, Path({str(tmp_path)!r}) / "det" / "arch")
'''
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
    meta = {"format": "spnas.detector/1", "plugins": [str(plugin)], "arch": "arch", "weights": "detector.safetensors"}
    (tmp_path / "det" / "detector.json").write_text(json.dumps(meta))
    r = cli("show", str(tmp_path / "det"), cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"--plugin {plugin}" in r.stderr and "never imports" in r.stderr
    ok = cli("show", str(tmp_path / "det"), "--plugin", str(plugin), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-1500:]


@pytest.mark.parametrize("key,value", [("arch", "../elsewhere"), ("weights", "/etc/passwd"), ("arch", ".")])
def test_paths_in_detector_json_stay_inside(tmp_path, key, value):
    import spnas

    d = make_detector_dir(tmp_path / "det", [])
    meta = json.loads((d / "detector.json").read_text())
    meta[key] = value
    (d / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=f"{key}: .*leaves the directory"):
        spnas.load_detector(d)


def test_a_link_out_of_arch_is_refused(tmp_path):
    import spnas

    d = make_detector_dir(tmp_path / "det", [])
    outside = tmp_path / "outside.safetensors"
    (d / "arch" / "weights.safetensors").rename(outside)
    (d / "arch" / "weights.safetensors").symlink_to(outside)
    with pytest.raises(ConfigError, match="a link out of the directory"):
        spnas.load_detector(d)
    r = cli("show", str(d), cwd=tmp_path)
    assert r.returncode == 2 and "a link out of the directory" in r.stderr


def test_loading_what_the_user_names_still_works(tmp_path):
    """The trusted path: --plugin (or plugins=) imports the file."""
    import spnas

    marker = tmp_path / "MARKER"
    plugin = tmp_path / "mine.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    d = make_detector_dir(tmp_path / "det", [str(plugin)])
    spnas.load_detector(d, plugins=[str(plugin)])
    assert marker.read_text() == "ran"
    torch.manual_seed(0)
