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


def test_readme_lineage_and_figures_come_from_the_shipped_quickstart_journal(tmp_path):
    """The README's lineage block is what `spnas show RUN --lineage` prints for the quick-start run whose
    journal ships in docs/figures/quickstart/, and its two figures are drawn from that journal."""
    import numpy as np
    import yaml
    from PIL import Image

    from spnas.search.journal import read_events
    from spnas.search.lineage import lineage_figure, lineage_text, trajectory_figure
    from spnas.search.tb import save_figure

    here = README.parent / "docs" / "figures" / "quickstart"
    events = read_events(here / "journal.jsonl")
    cfg = yaml.safe_load((README.parent / "examples" / "quickstart.yaml").read_text())
    epochs = {"train_epochs": cfg["train"]["epochs"], "start_epochs": cfg["start"]["train_epochs"]}
    block = re.search(r"<!-- lineage:quickstart -->\n```\n(.*?)\n```\n<!-- /lineage:quickstart -->", README.read_text(), re.S)
    assert block and block.group(1) == lineage_text(events, "AP", **epochs)
    for name, fig in (("lineage", lineage_figure(events, "AP", **epochs)), ("trajectory", trajectory_figure(events, "AP"))):
        save_figure(fig, tmp_path / name)
        shipped = np.asarray(Image.open(here / f"{name}.png").convert("RGB"), dtype=float)
        drawn = np.asarray(Image.open(tmp_path / f"{name}.png").convert("RGB"), dtype=float)
        assert shipped.shape == drawn.shape and np.abs(shipped - drawn).mean() < 1.0, name  # the same picture (fonts may differ by a pixel)
        assert f"docs/figures/quickstart/{name}.png" in README.read_text()
