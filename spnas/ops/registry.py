"""The morphism registry: a rule is a name, its sites, an apply function and a declared guarantee.

>>> from spnas.ops import register_morphism
>>> @register_morphism("my_rule", exact=False, sites=lambda arch: [...])
... def my_rule(arch, site, rng):
...     ...  # edit ``arch`` (a private clone) through its methods and return it

``exact`` rules promise the network's outputs are unchanged (eval and train mode, up to channel
replication for widened stages); ``approximate`` ones promise a valid Arch with untouched weights
kept. Registration checks the signatures; :meth:`Morphism.apply` checks the result, and both name
the rule in their errors.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import numpy as np

from spnas.errors import ArchError, MorphismError
from spnas.ir import Arch

__all__ = ["Morphism", "register_morphism", "unregister_morphism", "get_morphism", "list_morphisms", "Space", "DEFAULT_SPACE"]


@dataclass(frozen=True)
class Space:
    """Bounds the rules refuse to leave (paper §4: 8-60 blocks, at most 7 stages, K <= 3 subnets).

    ``max_shift``: how many blocks one ``swap`` may move a stage boundary (the paper's Figure 2 moves
    it by up to 3).
    """

    min_blocks: int = 8
    max_blocks: int = 60
    max_stages: int = 7
    max_subnets: int = 3
    max_shift: int = 3


DEFAULT_SPACE = Space()

SitesFn = Callable[..., Iterable[Hashable]]
ApplyFn = Callable[[Arch, Hashable, np.random.Generator], Arch]


def _positional_arity(fn: Callable) -> tuple[int, int]:
    sig = inspect.signature(fn)
    req = opt = 0
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            if p.default is p.empty:
                req += 1
            else:
                opt += 1
        elif p.kind == p.VAR_POSITIONAL:
            opt += 99
    return req, req + opt


@dataclass(frozen=True)
class Morphism:
    """A registered rewrite rule; call :meth:`sites` then :meth:`apply`."""

    name: str
    exact: bool
    fn: ApplyFn
    sites_fn: SitesFn
    doc: str = ""

    def sites(self, arch: Arch, space: Space = DEFAULT_SPACE) -> list[Hashable]:
        """Where the rule applies on ``arch`` within ``space``; empty when it would leave the space."""
        try:
            params = inspect.signature(self.sites_fn).parameters
            got = self.sites_fn(arch, space) if len(params) >= 2 else self.sites_fn(arch)
            return list(got)
        except (ArchError, MorphismError):
            raise
        except Exception as e:
            raise MorphismError(f"morphism {self.name!r}: sites() raised {type(e).__name__}: {e}") from e

    def apply(self, arch: Arch, site: Hashable, rng: np.random.Generator | None = None, space: Space = DEFAULT_SPACE) -> Arch:
        """A new Arch with the rule applied at ``site``; ``arch`` is left untouched."""
        rng = rng if rng is not None else np.random.default_rng(0)
        allowed = self.sites(arch, space)
        if site not in allowed:
            raise MorphismError(f"morphism {self.name!r}: {site!r} is not a site on {_code(arch)}; sites are {allowed[:8]}")
        try:
            out = self.fn(arch.clone(), site, rng)
        except MorphismError:
            raise
        except ArchError as e:
            raise MorphismError(f"morphism {self.name!r} at {site!r}: {e}") from e
        except Exception as e:
            raise MorphismError(f"morphism {self.name!r} at {site!r} raised {type(e).__name__}: {e}") from e
        if not isinstance(out, Arch):
            raise MorphismError(f"morphism {self.name!r}: expected apply to return an Arch, got {type(out).__name__}")
        try:
            out.verify()
        except ArchError as e:
            raise MorphismError(f"morphism {self.name!r} at {site!r} produced an invalid graph: {e}") from e
        return out


def _code(arch: Arch) -> str:
    try:
        return arch.code()
    except ArchError:
        return "<arch>"


_REGISTRY: dict[str, Morphism] = {}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def register_morphism(name: str, *, exact: bool, sites: SitesFn) -> Callable[[ApplyFn], ApplyFn]:
    """Decorator registering ``fn(arch, site, rng) -> Arch`` as morphism ``name``.

    ``sites(arch)`` or ``sites(arch, space)`` enumerates hashable sites. A duplicate name, a
    non-bool ``exact`` or a wrong signature is refused here with a message naming the rule.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise MorphismError(f"morphism name: expected an identifier, got {name!r}")
    if name in _REGISTRY:
        raise MorphismError(f"morphism {name!r} is already registered; pick another name or unregister_morphism({name!r})")
    if not isinstance(exact, bool):
        raise MorphismError(f"morphism {name!r}: exact must be True or False, got {exact!r}")
    if not callable(sites):
        raise MorphismError(f"morphism {name!r}: sites must be callable(arch[, space]), got {type(sites).__name__}")
    lo, hi = _positional_arity(sites)
    if not (lo <= 2 and hi >= 1 and lo >= 1):
        raise MorphismError(f"morphism {name!r}: sites must take (arch) or (arch, space), got {inspect.signature(sites)}")

    def deco(fn: ApplyFn) -> ApplyFn:
        if not callable(fn):
            raise MorphismError(f"morphism {name!r}: expected a function, got {type(fn).__name__}")
        lo, hi = _positional_arity(fn)
        if not lo <= 3 <= hi:
            raise MorphismError(f"morphism {name!r}: apply must take (arch, site, rng), got {inspect.signature(fn)}")
        if name in _REGISTRY:
            raise MorphismError(f"morphism {name!r} is already registered")
        _REGISTRY[name] = Morphism(name, exact, fn, sites, inspect.getdoc(fn) or "")
        return fn

    return deco


def unregister_morphism(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_morphism(name: str) -> Morphism:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MorphismError(f"unknown morphism {name!r}, expected one of {sorted(_REGISTRY)}") from None


def list_morphisms(pattern: str = "*") -> list[str]:
    """Registered names matching an fnmatch pattern, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))
