"""A found backbone that outlives spnas: one plain PyTorch source file (torch only) and its weights.

:func:`export_python` traces the compiled backbone with torch.fx down to ``torch.nn`` modules (spnas's
blocks, stems and fuses are inlined into the graph; ``ResizeAdd``, whose resize depends on shapes,
stays a module whose source goes into the file), then writes:

- ``<name>.py``: ``class FoundBackbone(nn.Module)`` built of ``torch.nn`` modules and the traced
  ``forward`` (returning the stage outputs by name, as the compiled backbone does), and ``load()``;
- ``<name>.pt``: its ``state_dict``, read with ``torch.load(weights_only=True)``.

The file imports nothing but torch (``tests/detect/test_standalone.py`` loads it with spnas
unimportable, and in CI in a fresh venv with torch and torchvision only). Before returning, the
written file is loaded and run beside the compiled backbone: any difference is an error.
"""

from __future__ import annotations

import importlib.util
import inspect
import textwrap
from pathlib import Path

import torch
from torch import fx, nn

from spnas.errors import ConfigError
from spnas.ir.modules import ResizeAdd

__all__ = ["export_python"]

_KEPT = (ResizeAdd,)  # spnas modules kept whole: their source is written into the file
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, _KEPT):
            return True
        return type(m).__module__.startswith("torch.nn") and not isinstance(m, _CONTAINERS)


def _constructor(name: str, m: nn.Module) -> str:
    if isinstance(m, _KEPT):
        return f"{type(m).__name__}()"
    if not type(m).__module__.startswith("torch.nn") or list(m.children()):
        raise ConfigError(f"export --format python: module {name!r} is a {type(m).__module__}.{type(m).__name__}, which a plain "
                          "PyTorch file cannot build; a plugin kind's module must be made of torch.nn modules")
    return f"nn.{m!r}"


def export_python(body: nn.Module, out: str | Path, *, name: str = "found_backbone", example: torch.Tensor | None = None,
                  code: str = "") -> Path:
    """Write ``body`` (a compiled backbone, see :func:`~spnas.detect.compile_backbone`) as ``out/<name>.py`` and
    ``out/<name>.pt``; returns the source file. ``code`` (the net's encoding) goes into the file's docstring."""
    body = body.eval()
    graph = _Tracer().trace(body)
    gm = fx.GraphModule(body, graph)
    leaves = [(n, m) for n, m in gm.named_modules() if n and not isinstance(m, _CONTAINERS) and
              (isinstance(m, _KEPT) or not list(m.children()))]
    lines = [f"        _add(self, {n!r}, {_constructor(n, m)})" for n, m in leaves]
    forward = gm.code.strip("\n")
    kept = "\n\n".join(textwrap.dedent(inspect.getsource(k)) for k in _KEPT)
    source = f'''"""A backbone found by spnas{f": {code}" if code else ""}, in plain PyTorch (it imports only torch).

    from {name} import load
    body = load()                 # FoundBackbone with its weights ({name}.pt beside this file), eval mode
    feats = body(images)          # a dict of stage outputs, '0' (stride 4) ... the last stage
"""

import operator  # noqa: F401  (the traced forward may use it)
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: F401
from torch import nn


{kept}


def _add(root: nn.Module, path: str, module: nn.Module) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        if not hasattr(root, p):
            root.add_module(p, nn.Module())
        root = getattr(root, p)
    root.add_module(leaf, module)


class FoundBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
{chr(10).join(lines)}

{textwrap.indent(forward, "    ")}


def load(weights: str | None = None) -> FoundBackbone:
    """The backbone with its trained weights (default: {name}.pt beside this file), in eval mode."""
    m = FoundBackbone()
    path = weights or Path(__file__).with_suffix(".pt")
    m.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return m.eval()
'''
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    py, pt = out / f"{name}.py", out / f"{name}.pt"
    py.write_text(source)
    torch.save({k: v.detach().cpu().clone() for k, v in gm.state_dict().items()}, pt)
    _check(py, body, example)
    return py


def _check(py: Path, body: nn.Module, example: torch.Tensor | None) -> None:
    """Load the written file and compare it with ``body`` on ``example`` (default a random 1x3x128x128 image)."""
    spec = importlib.util.spec_from_file_location(f"_spnas_standalone_{py.stem}", py)
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    x = example if example is not None else torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = dict(body.eval()(x)), dict(mod.load()(x))
    if set(want) != set(got) or any(not torch.allclose(want[k], got[k], rtol=1e-5, atol=1e-6) for k in want):
        raise ConfigError(f"export --format python: {py} does not reproduce the compiled backbone's outputs")
