"""The typed-settings toolkit every section of spnas's YAML is parsed with (pydantic): strict scalar
types, a frozen section that refuses unknown keys, and one-line errors that name the file, the line
and the field. It sits at the bottom of the package, beside :mod:`spnas.errors`, so the search's
``start.yaml`` (:mod:`spnas.search.config`) and a data file read by ``spnas train``
(:mod:`spnas.detect.datasets`) parse alike.

    start.yaml: line 17: search.lam: Input should be greater than or equal to 1, got 0
"""

from __future__ import annotations

import re
import reprlib
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from spnas.errors import ConfigError

__all__ = ["Int", "Bool", "Str", "Float", "Count", "Section", "short", "one_line", "yaml_line", "field_path"]


def _number(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"expected a number, got {type(v).__name__}")
    return float(v)


Int = StrictInt
Bool = StrictBool
Str = StrictStr
Float = Annotated[float, BeforeValidator(_number)]
Count = Annotated[StrictInt, Field(ge=1, le=1_000_000)]


class Section(BaseModel):
    """A section of a settings file: frozen, and an unknown key is an error (not silently ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


short = reprlib.Repr()
short.maxstring, short.maxother, short.maxlist, short.maxdict, short.maxlevel = 60, 60, 4, 4, 2


def field_path(loc: tuple[Any, ...]) -> str:
    """pydantic's error location as the YAML's dotted path (``search.morphisms[2]``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith(("function-", "constrained-")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def yaml_line(text: str | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    if not text:
        return None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)]
            if not nxt:
                break
            line = nxt[0][0].start_mark.line + 1
            node = nxt[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


_SUBFIELD = re.compile(r"(\[\d+\]|[a-z_]\w*(\.\w+|\[\d+\])*): ")


def one_line(e: ValidationError, where: str, text: str | None, *, prefix: tuple[Any, ...] = (),
             keys_hint: str = "python -m spnas.search --schema lists them") -> ConfigError:
    """pydantic's first error as one line naming the file, the line and the field (``prefix``: where the
    validated mapping sits in the file, e.g. ``("data",)``)."""
    err = e.errors(include_url=False)[0]
    loc = prefix + tuple(err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ").replace("\n", " ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown key; check its spelling and section ({keys_hint})"
    elif err["type"] == "value_error":
        m = _SUBFIELD.match(msg)  # a validator of a section names the field inside it: "train.json: …"
        if m:
            sub = m.group(1)
            loc = loc + tuple(int(x) if x.isdigit() else x for x in re.findall(r"\w+", sub))
            msg = msg[m.end():]
    else:
        msg = f"{msg}, got {short.repr(err.get('input'))}"
    line = yaml_line(text, loc)
    head = f"{where}: line {line}: " if line else f"{where}: "
    return ConfigError(f"{head}{field_path(loc)}: {msg}")
