"""Issue 27, item 6: a found backbone that outlives spnas (``spnas export --format python``): one plain PyTorch
file and its weights, loaded where spnas cannot be imported, gives the compiled backbone's outputs."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from spnas.detect import compile_backbone
from spnas.detect.standalone import export_python
from spnas.ir import add_subnet, parse

# loads the file with spnas unimportable (a finder that refuses it) and compares with the reference outputs
RUN = """
import sys
class NoSpnas:
    def find_spec(self, name, path=None, target=None):
        if name == "spnas" or name.startswith("spnas."):
            raise ImportError("spnas is not installed here")
sys.meta_path.insert(0, NoSpnas())
sys.path.insert(0, sys.argv[1])
import torch
from found_backbone import load
x, want = torch.load(sys.argv[2], weights_only=True)
with torch.no_grad():
    got = load()(x)
assert set(got) == set(want), (set(got), set(want))
print(max(float((got[k] - want[k]).abs().max()) for k in want))
assert not [m for m in sys.modules if m == "spnas" or m.startswith("spnas.")]
"""


def exported(tmp_path: Path) -> tuple[Path, Path]:
    arch = parse("BB(1,d1,d1,d1)", seed=3)
    add_subnet(arch, 1)  # a parallel net: its fuse and resize-add go into the file too
    add_subnet(arch, 3)
    body = compile_backbone(arch).eval()
    py = export_python(body, tmp_path / "out", code=arch.code())
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = {k: v.clone() for k, v in dict(body(x)).items()}
    ref = tmp_path / "ref.pt"
    torch.save((x, want), ref)
    return py, ref


def test_the_file_runs_without_spnas_and_matches(tmp_path):
    py, ref = exported(tmp_path)
    assert "spnas" not in "\n".join(ln for ln in py.read_text().splitlines() if ln.startswith(("import", "from")))
    site = sysconfig.get_paths()["purelib"]  # torch's, without the repo on the path (-I: no cwd, no PYTHONPATH)
    p = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.append({site!r})\n" + RUN, str(py.parent), str(ref)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert float(p.stdout.strip()) < 1e-5


@pytest.mark.slow
def test_the_file_runs_in_a_fresh_venv_with_torch_and_torchvision_only(tmp_path):
    """As a user a year from now: a new venv, torch and torchvision at the tested versions, nothing else."""
    py, ref = exported(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    root = Path(__file__).resolve().parents[2]
    pins = [ln.strip() for ln in (root / "constraints.txt").read_text().splitlines() if ln.startswith(("torch==", "torchvision=="))]
    assert len(pins) == 2, pins
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *pins], capture_output=True, text=True, timeout=1800)
    assert pip.returncode == 0, pip.stderr[-2000:]
    p = subprocess.run([str(venv / "bin" / "python"), "-c", RUN, str(py.parent), str(ref)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert float(p.stdout.strip()) < 1e-5
