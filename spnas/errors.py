"""The one error hierarchy of spnas (DESIGN §6).

Every error a user can cause derives from :class:`SpnasError`; the CLI prints it as one line and
exits 2. Anything else escaping is a bug.
"""

__all__ = ["SpnasError", "EncodingError", "ArchError", "MorphismError", "ConfigError", "DataError", "EvalError"]


class SpnasError(Exception):
    """Base class of every error spnas raises on bad input."""


class EncodingError(SpnasError, ValueError):
    """An architecture code such as ``BNB(111,d111)`` is malformed; the message names the position."""


class ArchError(SpnasError, ValueError):
    """An architecture graph or its weights break an invariant; the message names the node or file."""


class MorphismError(ArchError):
    """A morphism rule is malformed, or cannot apply at a site; the message names the rule."""


class ConfigError(SpnasError, ValueError):
    """A configuration file or value is invalid; the message names the file and field."""


class DataError(SpnasError, ValueError):
    """A data set is invalid (bad annotation, missing image); the message names the file and id."""


class EvalError(SpnasError, RuntimeError):
    """Training or evaluating a candidate failed (non-finite loss, crashed worker)."""
