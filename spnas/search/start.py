"""The start net of a search, and what is checked about it before anything is written.

:func:`start_arch` builds the start from ``start.code`` (or reads ``start.ir``) and imports
``start.weights``: a torchvision checkpoint (plain tensors, ``weights_only``) or an spnas
safetensors store; ``start.head`` names the detector weights outside the backbone that the start's
detector carries over (checked here, used by the start's request). :func:`check_start` refuses a
start the search's own bounds would refuse, or a ``start.head`` that is no safetensors file,
:func:`check_reignite` a reignite data source that cannot be had, each in one line, before the run.
"""

from __future__ import annotations

from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file

from spnas.errors import ConfigError
from spnas.ir import Arch, load, parse
from spnas.search.candidate import code_of
from spnas.search.config import SearchConfig

__all__ = ["start_arch", "check_start", "check_reignite"]


def start_arch(cfg: SearchConfig) -> Arch:
    """The start net of ``cfg``, with its weights where ``start.weights`` names a file."""
    st = cfg.start
    arch = load(cfg.path(st.ir)) if st.ir else parse(st.code, stem=st.stem, seed=cfg.seed)
    if st.weights:
        arch = _with_weights(arch, cfg.path(st.weights))
    return arch


def check_start(arch: Arch, cfg: SearchConfig) -> None:
    """A start net the search's own bounds refuse could never be compared with a child: refused before the run."""
    s = cfg.search
    n, stages = len(arch.main_chain()), len(arch.stages())
    if not s.min_blocks <= n <= s.max_blocks:
        raise ConfigError(f"start: the start net has {n} blocks on its main chain, outside search.min_blocks..max_blocks "
                          f"({s.min_blocks}..{s.max_blocks}); widen the bounds or choose another start")
    if stages > s.max_stages:
        raise ConfigError(f"start: the start net has {stages} stages, more than search.max_stages ({s.max_stages})")
    if cfg.start.head:
        path = cfg.path(cfg.start.head)
        try:
            with safe_open(str(path), "pt") as f:  # the header's names only: the tensors are read by the start's training
                names = list(f.keys())
        except FileNotFoundError:
            raise ConfigError(f"start.head: {path}: no such file") from None
        except Exception as e:  # safetensors' own error: a header it cannot read
            raise ConfigError(f"start.head: {path}: not a safetensors file ({e})") from None
        if not any(k.startswith(("backbone.fpn.", "rpn.", "roi_heads.")) for k in names):
            raise ConfigError(f"start.head: {path}: holds no detector weights (no backbone.fpn., rpn. or roi_heads. tensors)")


def check_reignite(cfg: SearchConfig) -> None:
    """A reignite data source that cannot be had fails at the first reignite, hours in: refused before the run."""
    if not (cfg.search.final_reignite or cfg.search.n_reignite):
        return
    spec = cfg.reignite.data
    if spec == "fashion-mnist":
        from spnas.detect.pretrain import FASHION_DIRS, fashion_mnist_dir

        if fashion_mnist_dir() is None:
            raise ConfigError(f"reignite.data: fashion-mnist: no IDX files in {', '.join(FASHION_DIRS)} "
                              "(apt-get install dataset-fashion-mnist), and the search reignites")
    elif spec != "generated" and not Path(cfg.path(spec)).is_dir():
        raise ConfigError(f"reignite.data: {spec}: no such ImageFolder directory, and the search reignites")


def _with_weights(arch: Arch, path: Path) -> Arch:
    """Start weights: a torchvision checkpoint (weights_only) or an spnas safetensors store."""
    import torch

    from spnas.ir import from_torchvision

    if not path.is_file():
        raise ConfigError(f"start.weights: {path}: no such file")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
        except Exception as e:
            raise ConfigError(f"start.weights: {path}: not a safetensors file ({e})") from None
        if set(tensors) != set(arch.weights):
            missing = sorted(set(arch.weights) ^ set(tensors))[:1]
            raise ConfigError(f"start.weights: {path}: keys differ from the start architecture's (e.g. {missing})")
        new = arch.with_weights(tensors)
        new.verify()
        return new
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"start.weights: {path}: not a torch checkpoint of plain tensors ({e})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    imported = from_torchvision(sd)
    if imported.fingerprint() != arch.fingerprint():
        raise ConfigError(f"start.weights: {path} holds {code_of(imported)}, but start.code is {code_of(arch)}")
    return imported
