"""A detection data set as settings, as a plain request, and as the loaded splits.

``data:`` of a search's ``start.yaml`` or of ``spnas train --data DATA.yaml`` is a :class:`DataConfig`
(validated once, paths relative to the file). :func:`resolve_data` turns it into the plain request
every evaluator and worker receives (absolute paths; the generated ``shapes`` set written, with
how to make it again); :func:`load_datasets` loads a request's train and validation splits (cached
per process). The detector layer owns all three, so training a net (``spnas train``, ``spnas
bench``) needs nothing from the search.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, StrictInt, ValidationError, model_validator

from spnas.detect.data import DEFAULT_CACHE_MB, generate_shapes, load_coco, load_ecp, load_voc, tile_dataset
from spnas.errors import ConfigError, DataError
from spnas.schema import Bool, Section, Str, one_line, short

__all__ = ["DataConfig", "check_data_files", "check_data", "resolve_data", "load_datasets", "read_data_file", "clear_cache"]

_DATA_CACHE: dict[str, Any] = {}


class DataConfig(Section):
    format: Literal["shapes", "coco", "voc", "ecp"] = "shapes"
    train: dict[Str, Any] = Field(default_factory=dict)  # coco: {json, images}; voc: {xml, images}; ecp: {labels, images}
    val: dict[Str, Any] = Field(default_factory=dict)
    classes: tuple[Str, ...] = ()
    strict: Bool = False
    ignore_other_vru: Bool = False  # ecp only: riders ignored (True) or discarded (False, the benchmark server's) in the miss rates
    tile: Annotated[StrictInt, Field(ge=0, le=16384)] = 0  # cut images into tiles of this size (0: off)
    cache_mb: Annotated[StrictInt, Field(ge=0, le=1_000_000)] = 512  # decoded images kept per process (LRU; 0: none)
    n_train: Annotated[StrictInt, Field(ge=2, le=1_000_000)] = 48  # shapes only
    n_val: Annotated[StrictInt, Field(ge=1, le=1_000_000)] = 16
    size: Annotated[StrictInt, Field(ge=32, le=4096)] = 128
    root: Str | None = None  # shapes: where to write them (default: <run>/data)

    @model_validator(mode="after")
    def _splits(self) -> DataConfig:
        if 0 < self.tile < 32:
            raise ValueError(f"tile: expected 0 (off) or a tile of at least 32 px, got {self.tile}")
        if self.ignore_other_vru and self.format != "ecp":
            raise ValueError(f"ignore_other_vru: an ECP benchmark setting; format {self.format!r} has no riders to ignore")
        if self.format == "shapes":
            return self
        key = {"coco": "json", "voc": "xml", "ecp": "labels"}[self.format]
        for split in ("train", "val"):
            spec = getattr(self, split)
            if not isinstance(spec.get(key), str):
                raise ValueError(f"{split}.{key}: expected the path of the {self.format} annotations, got {short.repr(spec.get(key))}")
            unknown = sorted(set(spec) - {key, "images", "image_ids"})
            if unknown:
                raise ValueError(f"{split}.{unknown[0]}: unknown key; expected some of {[key, 'images', 'image_ids']}")
        return self


def check_data_files(data: DataConfig, path: Callable[[str], Path]) -> tuple[tuple[Any, ...], str] | None:
    """What the schema cannot see: the annotation and image paths exist (``path`` resolves one against
    the settings file's folder). None, or (the field's location inside ``data``, the reason)."""
    if data.format != "shapes":
        for split in ("train", "val"):
            for key, v in getattr(data, split).items():
                if key in ("json", "xml", "labels", "images") and isinstance(v, str) and not path(v).exists():
                    return (split, key), f"no such file or directory: {path(v)}"
    if data.root is not None and path(data.root).exists() and not path(data.root).is_dir():
        return ("root",), f"{path(data.root)} is a file; expected a directory to write the generated set into"
    return None


def resolve_data(data: DataConfig, path: Callable[[str], Path], generate_into: Path, seed: int) -> dict[str, Any]:
    """The data settings as the plain request for the evaluators; writes the generated set if asked
    (into ``data.root``, else ``generate_into``)."""
    c = data
    if c.format == "shapes":
        root = path(c.root) if c.root else generate_into
        tr = generate_shapes(root, n_images=c.n_train, size=c.size, seed=seed, split="train")
        va = generate_shapes(root, n_images=c.n_val, size=c.size, seed=seed + 1, split="val")
        # "generate": how a worker without the run directory makes the same set itself (generate_shapes is deterministic)
        return {"format": "shapes", "train": {"json": str(tr)}, "val": {"json": str(va)}, "strict": c.strict, "tile": c.tile, "cache_mb": c.cache_mb,
                "generate": {"train": {"n_images": c.n_train, "size": c.size, "seed": seed},
                             "val": {"n_images": c.n_val, "size": c.size, "seed": seed + 1}}}

    def res(d: dict[str, Any]) -> dict[str, Any]:
        return {k: str(path(v)) if isinstance(v, str) else v for k, v in d.items()}

    req = {"format": c.format, "train": res(c.train), "val": res(c.val), "classes": list(c.classes), "strict": c.strict, "tile": c.tile,
           "cache_mb": c.cache_mb}
    if c.ignore_other_vru:  # only when set: the requests (and so the caches) of runs made before the switch stay the same
        req["ignore_other_vru"] = True
    return req


def read_data_file(file: str | os.PathLike, out: Path, *, seed: int = 0, strict: bool = False) -> dict[str, Any]:
    """``DATA.yaml`` (a ``data:`` section, or its fields at the top) validated, checked and resolved."""
    f = Path(file)
    try:
        text = f.read_text()
        doc = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{f}: cannot read YAML ({e})") from None
    nested = isinstance(doc, dict) and "data" in doc
    section = doc["data"] if nested else doc
    if not isinstance(section, dict):
        raise ConfigError(f"{f}: {'data: ' if nested else ''}expected a mapping of data settings (format, train, val, ...)")
    if strict:
        section = {**section, "strict": True}
    prefix = ("data",) if nested else ()
    try:
        data = DataConfig.model_validate(section)
    except ValidationError as e:
        raise one_line(e, str(f), text, prefix=prefix, keys_hint="the data section's keys: format, train, val, classes, strict, ...") from None
    base = f.parent.resolve()

    def path(p: str) -> Path:  # as a search's config resolves its paths
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else base / q

    bad = check_data_files(data, path)
    if bad:
        raise ConfigError(f"{f}: {'.'.join(map(str, prefix + bad[0]))}: {bad[1]}")
    return resolve_data(data, path, out / "data", seed)


def clear_cache() -> None:
    """Forget the loaded splits (the search's parent process after checking the data)."""
    _DATA_CACHE.clear()


def load_datasets(data: dict[str, Any]) -> tuple[Any, Any]:
    """Train and validation sets of a resolved data request (cached per process)."""
    key = json.dumps(data, sort_keys=True)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    fmt = data["format"]
    sets = []
    classes = list(data.get("classes") or []) or None
    for split in ("train", "val"):
        spec = data[split]
        if fmt in ("coco", "shapes"):
            ds = load_coco(spec["json"], spec.get("images"), strict=data.get("strict", False))
            if sets and [(c, sets[0].coco.cats[c]["name"]) for c in sets[0].cat_ids] != [(c, ds.coco.cats[c]["name"]) for c in ds.cat_ids]:
                raise DataError(f"{spec['json']}: its categories differ from the training split's ({spec['json']} vs "
                                f"{data['train']['json']}); both splits need the same ids and names")
        elif fmt == "ecp":
            ds = load_ecp(spec["labels"], spec.get("images"), classes=classes, strict=data.get("strict", False),
                          ignore_other_vru=bool(data.get("ignore_other_vru", False)))
            classes = ds.class_names
        else:  # one class list for both splits: data.classes, else the training split's
            ds = load_voc(spec["xml"], spec.get("images"), classes=classes, strict=data.get("strict", False),
                          unknown_class_is_error=split == "val")
            classes = ds.class_names
        ds.set_cache_mb(int(data.get("cache_mb", DEFAULT_CACHE_MB)))
        if data.get("tile"):
            ds = tile_dataset(ds, int(data["tile"]))
        if spec.get("image_ids"):
            ds = ds.subset(list(spec["image_ids"]))
        if not any(not a.get("iscrowd") for a in ds.coco.anns.values()):
            where = spec.get("json") or spec.get("xml") or spec.get("labels")
            raise DataError(f"{where}: the {split} split has no usable annotation (see the warnings above); a search on it "
                            "could decide nothing")
        sets.append(ds)
    _DATA_CACHE[key] = tuple(sets)
    return _DATA_CACHE[key]


def check_data(data: dict[str, Any], metric: str, *, keep: bool) -> None:
    """Load both splits once in the driver (annotations only; images decode lazily, or all under ``strict``).

    ``keep``: leave them in the process cache (inline evaluation reuses them); else free them.
    """
    from spnas.detect.metrics import LAMR_METRICS

    _, val = load_datasets(data)
    if metric in LAMR_METRICS:
        from spnas.detect.train import person_miss_rates

        if val.lamr_protocol is None:
            raise ConfigError(f"search.metric: {metric} is a miss rate of person data: ECP frames (data.format: ecp) or "
                              "CityPersons-style COCO (annotations with vis_ratio); this data set is neither")
        value = person_miss_rates(val, None)[metric]
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"search.metric: {metric}: the validation split has no person in this subset, so the miss rate is undefined")
    if metric in _AREA_RANGES:  # pycocotools gives -1 for an area range with no object: every candidate would tie
        lo, hi = _AREA_RANGES[metric]
        anns = [a for a in val.coco.anns.values() if not a.get("iscrowd")]
        if not any(lo <= float(a.get("area") or a["bbox"][2] * a["bbox"][3]) < hi for a in anns):
            name = {"APs": "small (area < 32²)", "APm": "medium (32² to 96²)", "APl": "large (area > 96²)"}[metric]
            raise ConfigError(f"search.metric: {metric}: the validation split has no {name} object, so {metric} is -1 for "
                              "every candidate; choose another metric")
    if not keep:
        clear_cache()


_AREA_RANGES = {"APs": (0.0, 32.0**2), "APm": (32.0**2, 96.0**2), "APl": (96.0**2, math.inf)}  # pycocotools' ranges
