"""spnas: serial-to-parallel backbone search for object detection by network morphism.

Using a found detector takes three names (imported on first use, so ``import spnas`` stays light)::

    import spnas
    model = spnas.load_detector("runs/quickstart")      # a run directory, its best/, or `spnas train`'s output
    outs = spnas.predict(model, ["a.jpg", "b.png"])      # boxes, labels, scores per image
    spnas.export_detector(model, "det.onnx", format="onnx")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_detector", "predict", "export_detector", "__version__"]

_LAZY = {"predict", "export_detector"}


def load_detector(path: Any, *, device: Any = "cpu", plugins: Any = ()) -> Any:
    """A ready detector from a run directory (its ``best/``), a ``best/`` or ``spnas train``'s output
    (:func:`spnas.detect.infer.load_detector`)."""
    from spnas.detect import infer
    from spnas.rundir import found_net

    return infer.load_detector(found_net(path), device=device, plugins=plugins)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from spnas.detect import infer

        return getattr(infer, name)
    raise AttributeError(f"module 'spnas' has no attribute {name!r}")
