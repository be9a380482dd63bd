"""Morphisms: function-preserving graph rewrites of an Arch, a registry, and the checker.

>>> from spnas.ops import get_morphism
>>> m = get_morphism("expand")
>>> child = m.apply(arch, m.sites(arch)[0], rng)
"""

from spnas.ops import rules as _rules  # noqa: F401  (registers the built-in rules)
from spnas.ops.check import CheckResult, check, relative_error
from spnas.plugins import load_plugin  # noqa: F401  (a rule file is a plugin; re-exported where users look)
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
