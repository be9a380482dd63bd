"""The README's "From Python" snippet runs as written, against the public surface it shows."""

import re
import shutil
from pathlib import Path

import pytest
import torch

from spnas.detect.cascade import CascadeRoIHeads

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.skipif(shutil.which("g++") is None, reason="the snippet's inductor export needs a C++ compiler")
def test_readme_python_snippet_runs():
    text = README.read_text()
    block = re.search(r"### From Python\n\n```python\n(.*?)```", text, re.S)
    assert block, "README has no 'From Python' code block"
    env: dict = {}
    exec(compile(block.group(1), str(README), "exec"), env)  # noqa: S102 - our own README
    child, arch, body, fast, x = env["child"], env["arch"], env["body"], env["fast"], env["x"]
    assert child.encode() != arch.encode() and child.params() > arch.params()  # widen grew it
    with torch.no_grad():
        ref, out = body(x), fast(x)
    assert list(ref) == ["res2", "res3", "res4", "res5"]
    assert all((ref[k] - out[k]).abs().max() <= 1e-4 * ref[k].abs().max() for k in ref)
    assert isinstance(env["model"].roi_heads, CascadeRoIHeads) and len(env["model"].roi_heads.box_heads) == 3
