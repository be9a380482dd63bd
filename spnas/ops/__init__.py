"""Morphisms: function-preserving graph rewrites of an Arch, a registry, and the checker.

>>> from spnas.ops import get_morphism
>>> m = get_morphism("expand")
>>> child = m.apply(arch, m.sites(arch)[0], rng)
"""

from spnas.ops import rules as _rules  # noqa: F401  (registers the built-in rules)
from spnas.ops.check import CheckResult, check, relative_error
from spnas.ops.registry import (
    DEFAULT_SPACE,
    Morphism,
    Space,
    get_morphism,
    list_morphisms,
    register_morphism,
    unregister_morphism,
)

__all__ = [
    "Morphism",
    "Space",
    "DEFAULT_SPACE",
    "register_morphism",
    "unregister_morphism",
    "get_morphism",
    "list_morphisms",
    "check",
    "CheckResult",
    "relative_error",
    "load_plugin",
]


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
