"""``start.yaml``: parsed once, at the edge, into frozen and validated config objects.

An unknown key or a bad value raises a one-line :class:`ConfigError` naming the file and the
field (``start.yaml: search.lam: expected an int >= 1, got 0``). Paths are resolved against the
config file's folder. See ``examples/quickstart.yaml`` for every section.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spnas.errors import ConfigError
from spnas.ops.registry import DEFAULT_SPACE

__all__ = [
    "SearchConfig",
    "StartConfig",
    "DataConfig",
    "DetectorConfig",
    "SerialConfig",
    "ParallelConfig",
    "ReigniteConfig",
    "WorkersConfig",
    "load_config",
    "config_from_dict",
]


@dataclass(frozen=True)
class StartConfig:
    code: str | None = "BB(11,d1,d1,d1)"
    ir: str | None = None  # a directory written by spnas.ir.save
    stem: str = "resnet"
    weights: str | None = None  # torchvision checkpoint (.pth/.pt, loaded weights_only) or .safetensors


@dataclass(frozen=True)
class DataConfig:
    format: str = "shapes"  # shapes | coco | voc
    train: dict[str, str] = field(default_factory=dict)  # coco: {json, images}; voc: {xml, images}
    val: dict[str, str] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    strict: bool = False
    tile: int = 0  # cut images into tiles of this size (0: off)
    n_train: int = 48  # shapes only
    n_val: int = 16
    size: int = 128
    root: str | None = None  # shapes: where to write them (default: <run>/data)


@dataclass(frozen=True)
class DetectorConfig:
    head: str = "cascade"
    preset: str = "lean"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SerialConfig:
    metric: str = "AP"
    lam: int = 2
    morphisms: tuple[str, ...] = ("expand", "swap", "widen", "add_stage")
    plugins: tuple[str, ...] = ()
    mutations: tuple[int, int] = (1, 3)
    n_stuck: int = 2
    n_reignite: int = 0
    max_generations: int = 4
    min_blocks: int = DEFAULT_SPACE.min_blocks
    max_blocks: int = DEFAULT_SPACE.max_blocks
    max_stages: int = DEFAULT_SPACE.max_stages
    flops_budget: float | None = None  # GMACs at the detector's input size
    params_budget: float | None = None  # millions of parameters
    max_tries: int = 50
    keep_inputs: bool = False  # keep each evaluated candidate's input weights (they can be rebuilt)


@dataclass(frozen=True)
class ParallelConfig:
    enabled: bool = True
    K: int = DEFAULT_SPACE.max_subnets
    n_stuck_p: int = 2
    max_candidates: int = 4
    max_additions: int = 3


@dataclass(frozen=True)
class ReigniteConfig:
    data: str = "generated"  # generated | fashion-mnist | an ImageFolder directory
    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    image_size: int = 64
    n_images: int = 512


@dataclass(frozen=True)
class WorkersConfig:
    n: int = 1
    devices: tuple[str, ...] = ("cpu",)
    threads: int = 0  # torch threads per worker (0: cores / workers)
    backend: str = "local"  # local | ray
    timeout_s: float = 0.0  # per candidate (0: none)


@dataclass(frozen=True)
class SearchConfig:
    start: StartConfig = field(default_factory=StartConfig)
    data: DataConfig = field(default_factory=DataConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields (spnas.detect.train)
    search: SerialConfig = field(default_factory=SerialConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    reignite: ReigniteConfig = field(default_factory=ReigniteConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    seed: int = 0
    base_dir: str = "."

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        return _plain(d)

    def path(self, p: str | None) -> Path | None:
        """A config path resolved against the config file's folder."""
        if p is None:
            return None
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else Path(self.base_dir) / q


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


_SECTIONS = {
    "start": StartConfig,
    "data": DataConfig,
    "detector": DetectorConfig,
    "search": SerialConfig,
    "parallel": ParallelConfig,
    "reignite": ReigniteConfig,
    "workers": WorkersConfig,
}


def _coerce(where: str, name: str, typ: Any, value: Any) -> Any:
    t = str(typ)
    bad = ConfigError(f"{where}.{name}: expected {t.replace('typing.', '')}, got {value!r}")
    if value is None:
        if "None" in t:
            return None
        raise bad
    if t.startswith("tuple"):
        if not isinstance(value, (list, tuple)):
            raise bad
        if "int, int" in t:
            if len(value) != 2 or not all(isinstance(v, int) for v in value):
                raise bad
        return tuple(value)
    if t.startswith("dict"):
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if t == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if t in ("float", "float | None"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if t in ("str", "str | None"):
        if not isinstance(value, str):
            raise bad
        return value
    return value


def _section(cls: type, d: Any, where: str) -> Any:
    if d is None:
        return cls()
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; expected one of {sorted(fields)}")
    return cls(**{k: _coerce(where, k, fields[k].type, v) for k, v in d.items()})


def config_from_dict(d: dict[str, Any], *, where: str = "config", base_dir: str | os.PathLike = ".") -> SearchConfig:
    """Validate a parsed YAML mapping into a :class:`SearchConfig`."""
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping at the top, got {type(d).__name__}")
    allowed = set(_SECTIONS) | {"train", "seed"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown section {unknown[0]!r}; expected some of {sorted(allowed)}")
    kw: dict[str, Any] = {name: _section(cls, d.get(name), f"{where}: {name}") for name, cls in _SECTIONS.items()}
    train = d.get("train") or {}
    if not isinstance(train, dict):
        raise ConfigError(f"{where}: train: expected a mapping, got {type(train).__name__}")
    from spnas.detect.train import config_from_dict as train_cfg

    try:
        train_cfg(dict(train))
    except ConfigError as e:
        raise ConfigError(f"{where}: train: {e}") from None
    seed = d.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where}: seed: expected an int >= 0, got {seed!r}")
    cfg = SearchConfig(**kw, train=dict(train), seed=seed, base_dir=str(base_dir))
    _validate(cfg, where)
    return cfg


def _validate(c: SearchConfig, where: str) -> None:
    def need(ok: bool, field_: str, msg: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"{where}: {field_}: expected {msg}, got {value!r}")

    need((c.start.code is None) != (c.start.ir is None), "start", "exactly one of code or ir", {"code": c.start.code, "ir": c.start.ir})
    need(c.start.stem in ("resnet", "deep"), "start.stem", "'resnet' or 'deep'", c.start.stem)
    need(c.data.format in ("shapes", "coco", "voc"), "data.format", "shapes, coco or voc", c.data.format)
    if c.data.format != "shapes":
        need(bool(c.data.train) and bool(c.data.val), "data.train/val", "both given for coco or voc data", (c.data.train, c.data.val))
    need(c.data.n_train >= 2 and c.data.n_val >= 1, "data.n_train/n_val", ">= 2 and >= 1", (c.data.n_train, c.data.n_val))
    need(c.detector.head in ("cascade", "faster"), "detector.head", "'cascade' or 'faster'", c.detector.head)
    s = c.search
    need(s.metric in ("AP", "AP50", "AP75", "APs", "APm", "APl", "VOC_AP50"), "search.metric", "a COCO stat name or VOC_AP50", s.metric)
    need(s.lam >= 1, "search.lam", "an int >= 1", s.lam)
    need(1 <= s.mutations[0] <= s.mutations[1], "search.mutations", "[lo, hi] with 1 <= lo <= hi", list(s.mutations))
    need(s.n_stuck >= 1, "search.n_stuck", "an int >= 1", s.n_stuck)
    need(s.n_reignite >= 0, "search.n_reignite", "an int >= 0", s.n_reignite)
    need(s.max_generations >= 0, "search.max_generations", "an int >= 0", s.max_generations)
    need(1 <= s.min_blocks <= s.max_blocks, "search.min_blocks/max_blocks", "1 <= min <= max", (s.min_blocks, s.max_blocks))
    need(bool(s.morphisms), "search.morphisms", "a non-empty list of rule names", list(s.morphisms))
    need(c.parallel.K >= 1, "parallel.K", "an int >= 1", c.parallel.K)
    need(c.workers.n >= 1, "workers.n", "an int >= 1", c.workers.n)
    need(c.workers.backend in ("local", "ray"), "workers.backend", "'local' or 'ray'", c.workers.backend)
    need(bool(c.workers.devices), "workers.devices", "a non-empty list such as [cpu] or [cuda:0, cuda:1]", list(c.workers.devices))


def load_config(path: str | os.PathLike) -> SearchConfig:
    """Read and validate ``start.yaml``; errors name the file, line or field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        raise ConfigError(f"{p}:{line} not valid YAML ({getattr(e, 'problem', e)})") from None
    return config_from_dict(d, where=str(p), base_dir=p.parent.resolve())
