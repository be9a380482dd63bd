"""Plugin files: a user's Python file that registers node kinds (``spnas.ir.register_kind``) and
morphism rules (``spnas.ops.register_morphism``) when imported.

The bottom layer, so that every package may load what the user names without importing another
(``spnas.detect`` loads the ``--plugin`` files a command was given; it never imports ``spnas.ops``).
A file is imported only when a user names it: a run directory's own record of its plugins is never
imported (see ``spnas.detect.infer``).
"""

from __future__ import annotations

__all__ = ["load_plugin"]


def load_plugin(path: str) -> None:
    """Import a user's rule file (``examples/morphisms/dilate.py``) so its rules register."""
    import importlib.util
    import sys
    from pathlib import Path

    from spnas.errors import ConfigError

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"morphism plugin {path}: no such file")
    name = f"spnas_plugin_{p.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, p)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except SystemExit as e:
        del sys.modules[name]
        raise ConfigError(f"morphism plugin {path}: called sys.exit({e.code!r}) while loading") from None
    except Exception as e:
        del sys.modules[name]
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"morphism plugin {path}: {type(e).__name__}: {e}") from e
