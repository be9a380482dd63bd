"""``save``/``load``: ``arch.yaml`` (kinds, specs, edges, ids) + ``weights.safetensors``.

Loading never unpickles: YAML goes through ``safe_load`` and tensors through safetensors. The YAML
records the weight file's sha256, so a truncated or tampered file is refused with an ArchError.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from spnas.errors import ArchError
from spnas.ir.arch import Arch

__all__ = ["save", "load", "FORMAT", "sha256_file", "write_tensors"]

FORMAT = "spnas-arch/1"
ARCH_FILE = "arch.yaml"
WEIGHTS_FILE = "weights.safetensors"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def write_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file``, with an I/O failure raised as the ``OSError`` it is.

    safetensors reports a full disk or a read-only directory as ``SafetensorError("... (os error 28)")``;
    as an ``OSError`` with its errno, callers tell the machine's failures from their own.
    """
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        m = _OS_ERROR.search(str(e))
        if not m:
            raise
        raise OSError(int(m.group(1)), os.strerror(int(m.group(1))), str(path)) from e


def save(arch: Arch, directory: str | os.PathLike) -> Path:
    """Write ``arch.yaml`` and ``weights.safetensors`` into ``directory`` (created if needed)."""
    arch.verify()
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    # subnets share tensors with the blocks they copy; safetensors wants one storage per key
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in arch.weights.items()}
    tmp = d / (WEIGHTS_FILE + ".tmp")
    write_tensors(tensors, tmp, metadata={"format": FORMAT})
    os.replace(tmp, d / WEIGHTS_FILE)
    doc = {"format": FORMAT}
    try:
        doc["code"] = arch.code()
    except ArchError:
        pass
    doc["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_file(d / WEIGHTS_FILE)}
    doc.update(arch.to_dict())
    tmp = d / (ARCH_FILE + ".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False, width=120))
    os.replace(tmp, d / ARCH_FILE)
    return d


_PLAIN_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,200}")


def load(directory: str | os.PathLike, *, verify: bool = True) -> Arch:
    """Read an Arch written by :func:`save`; raises ArchError naming the file on any problem."""
    d = Path(directory)
    af = d / ARCH_FILE
    if not af.is_file():
        raise ArchError(f"{af}: no such file; expected a directory written by spnas.ir.save")
    try:
        doc = yaml.safe_load(af.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ArchError(f"{af}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ArchError(f"{af}:{line} not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ArchError(f"{af}: expected format {FORMAT!r}, got {got!r}")
    winfo = doc.get("weights") or {}
    if not isinstance(winfo, dict):
        raise ArchError(f"{af}: weights: expected a mapping with file and sha256, got {type(winfo).__name__}")
    name = winfo.get("file", WEIGHTS_FILE)
    if not isinstance(name, str) or not _PLAIN_FILE.fullmatch(name):
        raise ArchError(f"{af}: weights.file: expected a file name inside {d} (letters, digits, '.', '_', '-'), got {str(name)[:60]!r}")
    wf = d / name
    if not wf.is_file():
        raise ArchError(f"{wf}: no such weight file")
    want = winfo.get("sha256")
    if want and sha256_file(wf) != want:
        raise ArchError(f"{wf}: sha256 differs from the one recorded in {ARCH_FILE}; the file is truncated or was modified")
    try:
        weights: dict[str, torch.Tensor] = load_file(str(wf))
    except (SafetensorError, OSError, ValueError) as e:
        raise ArchError(f"{wf}: not a readable safetensors file ({e})") from None
    arch = Arch.from_dict(doc, weights, where=str(af))
    if verify:
        try:
            arch.verify()
        except ArchError as e:
            raise ArchError(f"{af}: {e}") from None
    return arch
