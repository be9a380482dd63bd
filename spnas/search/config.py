"""``start.yaml``: parsed once, at the edge, into frozen, validated pydantic models.

Every section is typed (``start``, ``data``, ``detector`` with its preset and options, ``train``,
``search``, ``parallel``, ``reignite``, ``workers``, ``seed``): types, ranges, choices, unknown keys,
devices against this machine, files that must exist, morphism names. The whole file is checked when
it is read, before anything is written; the first problem raises a one-line :class:`ConfigError`
naming the file, the line and the field::

    start.yaml: line 17: search.lam: Input should be greater than or equal to 1, got 0

``python -m spnas.search --schema`` prints the JSON schema. Scalars are strict (``epochs: "3"`` is
an error, not 3); a float field takes an int. Defaults are the paper's where it states them
(``examples/paper.yaml`` spells them out); the defaults of ``train`` and ``detector.options`` are
those of :data:`spnas.detect.train.FAST` and :class:`spnas.detect.detector.DetectorOptions`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from spnas.detect.datasets import DataConfig, check_data_files
from spnas.errors import ConfigError, SpnasError
from spnas.schema import Bool, Float, Section, Str, field_path, one_line, short, yaml_line

__all__ = [
    "SearchConfig",
    "StartConfig",
    "DataConfig",
    "DetectorConfig",
    "TrainSection",
    "SerialConfig",
    "ParallelConfig",
    "ReigniteConfig",
    "WorkersConfig",
    "METRICS",
    "load_config",
    "config_from_dict",
    "schema",
]

# what a search may maximise, or minimise (the miss rates, any name with LAMR: person data only)
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "VOC_AP50", "VOC07_AP50",
           "LAMR", "LAMR_small", "LAMR_occluded", "LAMR_all", "CP_LAMR", "CP_LAMR_small", "CP_LAMR_heavy", "CP_LAMR_all")


def _number_or_auto(v: Any, what: str) -> Any:
    """A field that takes a number or the word ``auto``: any other string is refused, naming what it wants."""
    if isinstance(v, str) and v != "auto":
        raise ValueError(f"expected {what} or 'auto', got {short.repr(v)}")
    return v


class StartConfig(Section):
    """The start network: a code or a saved IR, the stem, optional weights you bring."""

    code: Str | None = "BB(11,d1,d1,d1)"
    ir: Str | None = None  # a directory written by spnas.ir.save
    stem: Literal["resnet", "deep"] = "resnet"
    weights: Str | None = None  # torchvision checkpoint (.pth/.pt, loaded weights_only) or .safetensors
    # a detector's weights outside the backbone (FPN, RPN, RoI heads) as safetensors: a run's
    # candidates/<id>/head.safetensors or a detector you trained on this data; carried over into the start's
    # detector where the shapes fit (else the start's detector head starts fresh)
    head: Str | None = None
    # the start net's own training (default: train.epochs); "auto": train cycles of train.epochs (the first from
    # the start's weights, each next one from the last one's, as the inherited nets train) until the validation
    # metric has not improved for `patience` cycles or `max_epochs` are spent; the best cycle is the start
    train_epochs: Annotated[StrictInt, Field(ge=1, le=1000)] | Literal["auto"] | None = None
    patience: Annotated[StrictInt, Field(ge=1, le=100)] = 2
    max_epochs: Annotated[StrictInt, Field(ge=1, le=10_000)] = 60
    # each cycle this many times as long as the one before (2: SGDR's doubling, Loshchilov & Hutter 2017). With 1
    # every cycle is a short warm restart, whose validation metric can swing more than a cycle gains (on the real
    # trees, cycles of 2 epochs: 0.40, 0.35, 0.37, 0.40, 0.31, ... with no trend); a growing cycle anneals for longer
    cycle_growth: Annotated[StrictInt, Field(ge=1, le=4)] = 1

    @field_validator("train_epochs", mode="before")
    @classmethod
    def _auto(cls, v: Any) -> Any:
        return _number_or_auto(v, "a number of epochs")

    @model_validator(mode="before")
    @classmethod
    def _ir_replaces_code(cls, d: Any) -> Any:
        if isinstance(d, dict) and d.get("ir") is not None and "code" not in d:
            return {**d, "code": None}
        return d

    @model_validator(mode="after")
    def _one_source(self) -> StartConfig:
        defaults = type(self).model_fields
        changed = [n for n in ("patience", "max_epochs", "cycle_growth") if getattr(self, n) != defaults[n].default]
        if self.train_epochs != "auto" and changed:  # a dumped config repeats the defaults: only a changed value is refused
            raise ValueError(f"{changed[0]}: only train_epochs: auto trains until convergence; set it, or drop {changed[0]}")
        if (self.code is None) == (self.ir is None):
            raise ValueError("code: expected exactly one of start.code and start.ir")
        if self.code is not None:
            from spnas.ir import decode

            try:
                decode(self.code)
            except SpnasError as e:  # EncodingError names the position
                raise ValueError(f"code: {e}") from None
        return self


def _options_model() -> type[BaseModel]:
    """Every :class:`DetectorOptions` field, optional (unset: the preset's value), typed and bounded."""
    from spnas.detect.detector import DetectorOptions

    hints = typing.get_type_hints(DetectorOptions)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(DetectorOptions):
        t = hints[f.name]
        if f.name == "norm":
            ann: Any = Literal["bn", "frozen", "sync"]
        elif t is int:
            ann = Annotated[StrictInt, Field(ge=1, le=100_000)]
        elif t is float:
            ann = Annotated[Float, Field(ge=0.0, le=1.0)]
        else:  # tuple[float, ...]
            ann = Annotated[tuple[Annotated[Float, Field(gt=0.0)], ...], Field(min_length=1, max_length=8)]
        fields[f.name] = (ann | None, None)
    return create_model("DetectorOptionsModel", __config__=ConfigDict(extra="forbid"), **fields)


_DetectorOptions = _options_model()


class DetectorConfig(Section):
    head: Literal["cascade", "faster"] = "cascade"
    preset: Literal["lean", "default"] = "lean"
    options: dict[Str, Any] = Field(default_factory=dict)  # DetectorOptions fields over the preset's

    @field_validator("options", mode="before")
    @classmethod
    def _typed_options(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        return _DetectorOptions.model_validate(v).model_dump(exclude_none=True)

    @model_validator(mode="after")
    def _sizes(self) -> DetectorConfig:
        from spnas.detect.detector import resolve_options

        o = resolve_options(self.preset, **self.options)
        if o.min_size > o.max_size:
            raise ValueError(f"options.min_size: expected <= max_size, got {o.min_size} > {o.max_size}")
        return self


from spnas.detect.train import TrainSection  # noqa: E402  (the bounds live beside TrainConfig, where spnas train reads them)


class FidelityConfig(Section):
    """Successive halving inside each serial generation: every child and the continued parent train
    ``rungs[0]`` epochs; the best ``1/eta`` of the children (at least one) and the continued parent go on
    from their weights for ``rungs[1]`` more epochs, and so on; the last rung decides. Every contestant
    of a rung trains the same epochs with the same seed."""

    rungs: Annotated[tuple[Annotated[StrictInt, Field(ge=1, le=1000)], ...], Field(min_length=2, max_length=8)] = (1, 2)
    eta: Annotated[StrictInt, Field(ge=2, le=64)] = 2


class SerialConfig(Section):
    """The serial level (Algorithm 1). Counts of tries count trained children, as the paper does."""

    metric: Literal[METRICS] = "AP"  # type: ignore[valid-type]
    acceptance: Literal["fair", "paper"] = "fair"  # fair: a child must beat its parent trained on as long
    noise_seeds: Annotated[StrictInt, Field(ge=0, le=64)] = 0  # continue the start net under N seeds: the metric's spread
    # a child must beat its baseline by more than this; "auto" (the default): min_gain_sigmas x the std of the
    # noise runs, so the measured seed spread decides, not only reports (0 where no noise runs are asked for)
    min_gain: Annotated[Float, Field(ge=0.0, le=1e6)] | Literal["auto"] = "auto"
    min_gain_sigmas: Annotated[Float, Field(ge=0.0, le=100.0)] = 2.0
    lam: Annotated[StrictInt, Field(ge=1, le=256)] = 3
    # the paper's swap and expand, and add_stage: without it no net leaves its start's stage count, while the
    # paper's own Table 7 nets have 6 stages grown from ResNet-18's 4 (within max_stages)
    morphisms: Annotated[tuple[Str, ...], Field(min_length=1, max_length=64)] = ("swap", "expand", "add_stage")
    plugins: tuple[Str, ...] = ()
    mutations: tuple[Annotated[StrictInt, Field(ge=1, le=20)], Annotated[StrictInt, Field(ge=1, le=20)]] = (3, 3)
    n_stuck: Annotated[StrictInt, Field(ge=1, le=100_000)] = 20  # tries (children) without an accepted one
    n_reignite: Annotated[StrictInt, Field(ge=0, le=100)] = 2
    final_reignite: Bool = False  # end the serial level with one more reignite of its best
    max_generations: Annotated[StrictInt, Field(ge=0, le=100_000)] = 100
    min_blocks: Annotated[StrictInt, Field(ge=1, le=200)] = 8
    max_blocks: Annotated[StrictInt, Field(ge=1, le=200)] = 60
    max_stages: Annotated[StrictInt, Field(ge=1, le=12)] = 7
    max_shift: Annotated[StrictInt, Field(ge=1, le=20)] = 3  # blocks a swap may move a stage boundary
    flops_budget: Annotated[Float, Field(gt=0.0)] | None = None  # GMACs at the detector's input size
    params_budget: Annotated[Float, Field(gt=0.0)] | None = None  # millions of parameters
    max_tries: Annotated[StrictInt, Field(ge=1, le=100_000)] = 50  # draws to find one new child within the bounds
    keep_inputs: Bool = False  # keep each evaluated candidate's input weights (they can be rebuilt)
    # a free proxy as a pre-filter: draw prefilter_draw children per generation, train the lam best by it
    # ("gmacs", "params": more first; "-gmacs", "-params": fewer first); null: every drawn child trains
    prefilter: Literal["gmacs", "-gmacs", "params", "-params"] | None = None
    prefilter_draw: Annotated[StrictInt, Field(ge=1, le=1000)] = 12
    # multi-fidelity generations (successive halving); null: the fixed scheme (every child trains train.epochs)
    fidelity: FidelityConfig | None = None

    @field_validator("min_gain", mode="before")
    @classmethod
    def _gain(cls, v: Any) -> Any:
        return _number_or_auto(v, "a number")

    @model_validator(mode="after")
    def _ranges(self) -> SerialConfig:
        if self.mutations[0] > self.mutations[1]:
            raise ValueError(f"mutations: expected [lo, hi] with lo <= hi, got {list(self.mutations)}")
        if self.min_blocks > self.max_blocks:
            raise ValueError(f"min_blocks: expected <= max_blocks ({self.max_blocks}), got {self.min_blocks}")
        if self.fidelity is not None and self.acceptance != "fair":
            raise ValueError("fidelity: successive halving races the children against the continued parent; "
                             "it needs acceptance: fair")
        if self.min_gain == "auto" and self.noise_seeds == 1:  # 0: no noise runs, a bar of 0; 1 run has no spread
            raise ValueError("min_gain: auto sets the bar from the spread of the noise runs, and one run has none; set "
                             "search.noise_seeds to 2 or more (or 0: no noise runs, a bar of 0), or give min_gain a number")
        return self


class ParallelConfig(Section):
    enabled: Bool = True
    K: Annotated[StrictInt, Field(ge=1, le=9)] = 3  # at most K extra subnets a stage
    n_stuck_p: Annotated[StrictInt, Field(ge=1, le=100_000)] = 10  # tries without beating the baseline
    max_candidates: Annotated[StrictInt, Field(ge=1, le=100_000)] = 50
    max_additions: Annotated[StrictInt, Field(ge=1, le=200)] | None = None  # cap subnets a sample adds (None: L*K)


class ReigniteConfig(Section):
    data: Str = "generated"  # generated | fashion-mnist | an ImageFolder directory
    epochs: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    batch_size: Annotated[StrictInt, Field(ge=1, le=4096)] = 32
    lr: Annotated[Float, Field(gt=0.0, le=100.0)] = 0.05
    image_size: Annotated[StrictInt, Field(ge=16, le=1024)] = 64
    n_images: Annotated[StrictInt, Field(ge=1, le=100_000_000)] = 512


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


class WorkersConfig(Section):
    n: Annotated[StrictInt, Field(ge=1, le=1024)] = 1
    devices: Annotated[tuple[Str, ...], Field(min_length=1, max_length=1024)] = ("cpu",)
    threads: Annotated[StrictInt, Field(ge=0, le=1024)] = 0  # torch threads per worker (0: cores / workers)
    backend: Literal["local", "ray", "inline"] = "local"  # inline: in the search process (debugging, tests)
    # per candidate, in seconds; None: automatic (10x the slowest result so far, at least 600 s; 6 h for the first); 0: none
    timeout_s: Annotated[Float, Field(ge=0.0, le=1e7)] | None = None
    retries: Annotated[StrictInt, Field(ge=0, le=100)] = 2  # re-runs of a candidate the machine failed (disk, memory, worker, timeout); then the search stops
    # ray only: the cluster (None: RAY_ADDRESS, else a local one), the GPU share of one candidate, and how candidates
    # travel: object_store (workers need no shared file system) or files (every worker reads the run directory)
    address: Str | None = None
    gpus_per_task: Annotated[Float, Field(gt=0.0, le=8.0)] = 1.0
    transport: Literal["object_store", "files"] = "object_store"
    # ray only: Ray's runtime_env for the search's job, set up on every node (e.g. {pip: [spnas, torch==2.14.1,
    # torchvision==0.29.1]}, env_vars); None: every node must have spnas and torch installed already
    runtime_env: dict[Str, Any] | None = None
    # one candidate on N devices: N ranks of DistributedDataParallel (NCCL on CUDA, gloo on the CPU), each with
    # train.batch_size images a micro-step; locally a slot takes N consecutive entries of `devices` (round-robin),
    # on Ray a placement group of N bundles (each gpus_per_task GPUs, or threads CPUs)
    devices_per_candidate: Annotated[StrictInt, Field(ge=1, le=1024)] = 1

    @field_validator("devices")
    @classmethod
    def _device_names(cls, devices: tuple[str, ...]) -> tuple[str, ...]:
        for i, d in enumerate(devices):
            if not _DEVICE.fullmatch(d):
                raise ValueError(f"[{i}]: expected cpu, cuda or cuda:N, got {short.repr(d)}")
        return devices


class SearchConfig(Section):
    start: StartConfig = Field(default_factory=StartConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    train: TrainSection = Field(default_factory=TrainSection)  # type: ignore[valid-type]
    search: SerialConfig = Field(default_factory=SerialConfig)
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)
    reignite: ReigniteConfig = Field(default_factory=ReigniteConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)] = 0
    _base_dir: str = PrivateAttr(default=".")

    @model_validator(mode="after")
    def _metric_fits_data(self) -> SearchConfig:
        if "LAMR" in self.search.metric and self.data.format in ("shapes", "voc"):
            raise ValueError(f"search.metric: {self.search.metric} is a miss rate of person data: use data.format ecp, "
                             "or coco with CityPersons-style annotations (vis_ratio)")
        return self

    @property
    def base_dir(self) -> str:
        return self._base_dir

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (``config.yaml`` of a run)."""
        return self.model_dump(mode="json")

    def path(self, p: str | None) -> Path | None:
        """A config path resolved against the config file's folder."""
        if p is None:
            return None
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else Path(self._base_dir) / q

    def replace(self, **section_changes: dict[str, Any] | Any) -> SearchConfig:
        """A copy with some fields changed (``cfg.replace(seed=3, workers={"n": 2})``), validated again."""
        d = self.to_dict()
        for k, v in section_changes.items():
            d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
        return config_from_dict(d, where="config", base_dir=self._base_dir)


def schema() -> dict[str, Any]:
    """The JSON schema of ``start.yaml``."""
    return SearchConfig.model_json_schema()


# ------------------------------------------------------------------------------------------ reading
def config_from_dict(d: Any, *, where: str = "config", base_dir: str | os.PathLike = ".", text: str | None = None) -> SearchConfig:
    """Validate a parsed YAML mapping into a :class:`SearchConfig`; nothing is written."""
    if d is None:
        raise ConfigError(f"{where}: the config is empty; expected sections such as start, data, search (see examples/quickstart.yaml)")
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping at the top, got {type(d).__name__}")
    try:
        cfg = SearchConfig.model_validate(d)
    except ValidationError as e:
        raise one_line(e, where, text) from None
    except SpnasError as e:  # an EncodingError from start.code, a ConfigError from a preset
        section = "start.code" if type(e).__name__ == "EncodingError" else "detector"
        raise ConfigError(f"{where}: {section}: {e}") from None
    cfg._base_dir = str(base_dir)
    _check_environment(cfg, where, text)
    return cfg


def _check_environment(cfg: SearchConfig, where: str, text: str | None) -> None:
    """What the schema cannot see: this machine's devices, files that must exist, plugins and their rules."""
    from spnas.ops import get_morphism, load_plugin

    def fail(loc: tuple[Any, ...], msg: str) -> ConfigError:
        line = yaml_line(text, loc)
        return ConfigError(f"{where}: {'line %d: ' % line if line else ''}{field_path(loc)}: {msg}")

    for i, p in enumerate(cfg.search.plugins):
        try:
            load_plugin(str(cfg.path(p)))
        except SpnasError as e:
            raise fail(("search", "plugins", i), str(e)) from None
    for i, name in enumerate(cfg.search.morphisms):
        try:
            get_morphism(name)
        except SpnasError as e:
            raise fail(("search", "morphisms", i), str(e)) from None
    if cfg.workers.backend != "ray":  # a Ray cluster's GPUs are on its nodes, not here
        for i, d in enumerate(cfg.workers.devices):
            if d.startswith("cuda"):
                import torch

                n, k = torch.cuda.device_count(), int(d.split(":")[1]) if ":" in d else 0
                if k >= n:
                    raise fail(("workers", "devices", i), f"{d} is not on this machine, which has {n} CUDA device(s)")
    for loc, p in (("start", "ir"), cfg.start.ir), (("start", "weights"), cfg.start.weights), (("start", "head"), cfg.start.head):
        if p is not None and not cfg.path(p).exists():
            raise fail(loc, f"no such file or directory: {cfg.path(p)}")
    bad = check_data_files(cfg.data, cfg.path)
    if bad:
        raise fail(("data", *bad[0]), bad[1])


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key (or section) given twice in one mapping, where YAML keeps the last silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                break
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (first on line {first + 1}); YAML would keep the last silently", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def safe_load_unique(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicated keys (raises ``yaml.YAMLError`` naming the key and lines)."""
    loader = _UniqueKeyLoader(text)  # a SafeLoader: what yaml.safe_load does, with the duplicate check
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_config(path: str | os.PathLike) -> SearchConfig:
    """Read and validate ``start.yaml``; errors name the file, line and field."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (byte {e.start})") from None
    try:
        d = safe_load_unique(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark else ""
        raise ConfigError(f"{p}:{line} not valid YAML ({getattr(e, 'problem', e)})") from None
    return config_from_dict(d, where=str(p), base_dir=p.parent.resolve(), text=text)
