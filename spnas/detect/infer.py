"""A found detector in use: a self-describing directory, loading it, predicting on image files, exporting it.

A search's ``best/`` (and ``spnas train``'s output) holds ``arch/`` (the backbone IR and weights),
``detector.safetensors`` (the whole detector's state dict) and ``detector.json``: the class names,
the label <-> category map, the detector's settings (head and every :class:`DetectorOptions` field),
the input normalisation, the code, the metric it reached and the plugin files its node kinds need.
So a net is used with no hand-written lines::

    import spnas
    model = spnas.load_detector("runs/quickstart")          # a run directory, its best/, or a train output
    outs = spnas.predict(model, ["a.jpg", "b.png"])          # [{"boxes", "labels", "scores"}] per image
    spnas.export_detector(model, "det.onnx", format="onnx")  # or format="torchscript"

Exports hold the whole detector (normalisation and resize, backbone, FPN, RPN, the cascade heads,
NMS) and take one float RGB image ``(3, H, W)`` in [0, 1] of any size; the metadata (classes,
code) travels inside the file. :func:`run_exported` runs either format for a parity check.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from spnas.errors import ConfigError, SpnasError

__all__ = ["DETECTOR_JSON", "EXPORT_FORMATS", "describe_detector", "write_description", "detector_dir", "read_description", "resolve_source", "load_detector",
           "predict", "coco_results", "export_detector", "run_exported", "compare_detections"]

DETECTOR_JSON = "detector.json"
DETECTOR_WEIGHTS = "detector.safetensors"
FORMAT = "spnas.detector/1"
EXPORT_FORMATS = ("torchscript", "onnx")


def describe_detector(*, code: str, classes: Sequence[str], label_to_cat: dict[int, int], head: str, options: Any,
                      eval_batch_size: int, plugins: Sequence[str] = (), metric: dict[str, Any] | None = None,
                      source: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``detector.json`` (plain data). ``options`` is a resolved :class:`DetectorOptions`."""
    from spnas.detect.detector import IMAGE_MEAN, IMAGE_STD

    return {
        "format": FORMAT,
        "code": code,
        "classes": list(classes),
        "categories": [{"label": int(k), "category_id": int(v), "name": classes[int(k) - 1]} for k, v in sorted(label_to_cat.items())],
        "head": head,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(options).items()},
        "input": {"layout": "list of (3, H, W) float RGB tensors in [0, 1]; the model normalises and resizes",
                  "image_mean": list(IMAGE_MEAN), "image_std": list(IMAGE_STD)},
        "eval_batch_size": int(eval_batch_size),
        "plugins": [str(Path(p).resolve()) for p in plugins],
        "metric": metric,
        "source": source or {},
        "arch": "arch",
        "weights": DETECTOR_WEIGHTS,
    }


def write_description(directory: str | os.PathLike, meta: dict[str, Any]) -> Path:
    p = Path(directory) / DETECTOR_JSON
    p.write_text(json.dumps(meta, indent=1))
    return p


def detector_dir(path: str | os.PathLike) -> Path:
    """``path`` where it is a self-describing detector directory (``detector.json``; a run directory's
    ``best/`` is one: the commands map a run to it with :func:`spnas.rundir.found_net`)."""
    p = Path(path)
    if (p / DETECTOR_JSON).is_file():
        return p
    raise ConfigError(f"{p}: not a run directory or a detector directory (no {DETECTOR_JSON} in it or in best/)")


def read_description(source: str | os.PathLike) -> dict[str, Any] | None:
    """``detector.json`` of ``source`` (a detector directory) with ``dir`` added, else None (``source`` is
    then an Arch directory or a code)."""
    d = Path(source)
    try:
        described = (d / DETECTOR_JSON).is_file() and (d / "arch" / "arch.yaml").is_file()
    except (OSError, ValueError):  # a code, not a path
        return None
    return {**_read_meta(d), "dir": str(d)} if described else None


def _read_meta(d: Path) -> dict[str, Any]:
    """``d/detector.json`` as a mapping whose file paths (``arch``, ``weights``, and what ``arch/`` holds) stay in ``d``."""
    f = d / DETECTOR_JSON
    try:
        meta = json.loads(f.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{f}: not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{f}: expected a JSON object, got {type(meta).__name__}")
    root = d.resolve()
    for key, default in (("arch", "arch"), ("weights", DETECTOR_WEIGHTS)):
        rel = meta.setdefault(key, default)  # older descriptions may omit them: the standard names
        if not isinstance(rel, str) or not rel or "\x00" in rel:
            raise ConfigError(f"{f}: {key}: expected a path inside {d}, got {str(rel)[:60]!r}")
        target = (d / rel).resolve()
        if not target.is_relative_to(root) or target == root:
            raise ConfigError(f"{f}: {key}: {rel!r} leaves the directory {d}; a detector directory holds its own files")
    _check_meta(meta, f)
    arch_dir = d / meta.get("arch", "arch")
    for q in ([arch_dir, *arch_dir.iterdir()] if arch_dir.is_dir() else []):
        if not q.resolve().is_relative_to(root):
            raise ConfigError(f"{q}: a link out of the directory {d} (to {q.resolve()}); a detector directory holds its own files")
    return meta


MAX_IMAGE_SIDE = 8192  # a detector size beyond this is a damaged file, not a setting (a 16k x 16k float image is 3 GB)


def _check_meta(meta: dict[str, Any], f: Path) -> None:
    """The fields loading and using a detector reads, with their types and ranges: one line naming the first that is wrong."""
    def bad(field: str, want: str) -> ConfigError:
        got = meta.get(field, "missing") if not isinstance(meta.get(field), (dict, list)) else type(meta.get(field)).__name__
        return ConfigError(f"{f}: {field}: expected {want}, got {str(got)[:60]}")

    if "classes" in meta or "format" in meta and "options" in meta:  # a whole description (an Arch-only one holds less)
        classes = meta.get("classes")
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
            raise bad("classes", "a non-empty list of class names")
        cats = meta.get("categories")
        if not isinstance(cats, list) or len(cats) != len(classes) or not all(
                isinstance(c, dict) and isinstance(c.get("label"), int) and isinstance(c.get("category_id"), int) for c in cats):
            raise bad("categories", f"{len(classes)} entries (one per class) with integer label and category_id")
        if meta.get("head") not in ("cascade", "faster"):
            raise bad("head", "'cascade' or 'faster'")
        opts = meta.get("options")
        if not isinstance(opts, dict):
            raise bad("options", "a mapping of detector settings")
        for side in ("min_size", "max_size"):
            v = opts.get(side)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_IMAGE_SIDE):
                raise ConfigError(f"{f}: options.{side}: expected an integer from 1 to {MAX_IMAGE_SIDE}, got {str(v)[:40]}")
        b = meta.get("eval_batch_size", 1)
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise bad("eval_batch_size", "a positive integer")


def _load_trusted_plugins(plugins: Sequence[str], meta: dict[str, Any] | None) -> None:
    """Import the plugin files the user named (``--plugin``), never the ones a directory names: a shipped run
    directory must not run code of its own. A net whose kinds are missing fails to load with one line naming
    the recorded file to pass."""
    from spnas.plugins import load_plugin

    for f in plugins:
        load_plugin(f)


def resolve_source(source: str | os.PathLike, *, plugins: Sequence[str] = (), stem: str = "resnet", seed: int = 0) -> tuple[Any, dict[str, Any] | None]:
    """The net a command names: a run directory (its best net) or detector directory, a saved Arch directory,
    or a code. Returns ``(arch, detector.json or None)``. Only the plugin files in ``plugins`` are imported
    (those ``detector.json`` records are named in the error when the net needs them)."""
    from spnas.ir import load, parse

    meta = read_description(source)
    _load_trusted_plugins(plugins, meta)
    if meta is not None:
        return _load_arch(Path(meta["dir"]) / meta["arch"], meta), meta
    return (load(source) if Path(source).is_dir() else parse(str(source), stem=stem, seed=seed)), None


def _load_arch(path: Path, meta: dict[str, Any]) -> Any:
    from spnas.errors import ArchError
    from spnas.ir import load

    try:
        return load(path)
    except ArchError as e:
        recorded = [str(p) for p in meta.get("plugins") or [] if isinstance(p, str)]
        if recorded and "plugin" in str(e):
            raise ConfigError(f"{e}; spnas never imports a plugin a directory names: if you trust it, pass "
                              + " ".join(f"--plugin {p}" for p in recorded)) from None
        raise


def load_detector(path: str | os.PathLike, *, device: str | torch.device = "cpu", plugins: Sequence[str] = ()) -> nn.Module:
    """A ready detector (eval mode, on ``device``) from a run directory, its ``best/``, or ``spnas train``'s output.

    ``model.spnas_meta`` is the ``detector.json`` (classes, ``categories``: label -> category id and
    name, settings, metric). Plugin files the net's node kinds need are imported only from ``plugins``
    (the user's word): the files ``detector.json`` records are named in the error, never imported.
    """
    from safetensors.torch import load_file

    from spnas.detect.detector import build_detector
    from spnas.ir import load

    d = detector_dir(path)
    meta = _read_meta(d)
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{d / DETECTOR_JSON}: format {meta.get('format')!r} is not {FORMAT!r}")
    _load_trusted_plugins(plugins, meta)
    for required in ("classes", "head", "options"):
        if required not in meta:
            raise ConfigError(f"{d / DETECTOR_JSON}: {required}: missing; expected a whole description (see docs/inference.md)")
    arch = _load_arch(d / meta["arch"], meta)
    try:
        model = build_detector(arch, len(meta["classes"]), meta["head"], preset="default", **meta["options"])
    except SpnasError:
        raise
    except (TypeError, ValueError, RuntimeError) as e:  # an option of the wrong type or range
        raise ConfigError(f"{d / DETECTOR_JSON}: options: cannot build the detector ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
    try:
        state = load_file(str(d / meta["weights"]))
    except Exception as e:  # safetensors raises several kinds on a bad file
        raise SpnasError(f"{d / meta['weights']}: cannot read the detector's weights ({e})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))[:200]
        raise ConfigError(f"{d / DETECTOR_JSON}: does not describe {meta['weights']} (classes, head or options differ from "
                          f"the weights': {first})") from None
    model.spnas_meta = meta
    return model.eval().to(device)


@torch.no_grad()
def predict(model: nn.Module, images: Sequence[str | os.PathLike | Tensor], *, batch_size: int | None = None,
            score_thresh: float | None = None, device: str | torch.device | None = None) -> list[dict[str, Tensor]]:
    """Detections (``boxes`` xyxy in the image's pixels, ``labels`` 1..C, ``scores``) per image, on the CPU.

    ``images``: files (decoded EXIF-aware, as in training) or ``(3, H, W)`` tensors in [0, 1].
    ``batch_size`` defaults to the batch the detector was evaluated with (``detector.json``), so the
    journaled metric is reproduced bit for bit; ``score_thresh`` drops lower scores (the model's own
    threshold, ``box_score_thresh``, applies first).
    """
    from spnas.detect.data import decode_image_file

    meta = getattr(model, "spnas_meta", {})
    batch_size = batch_size or int(meta.get("eval_batch_size", 1))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    outs: list[dict[str, Tensor]] = []
    for i in range(0, len(images), batch_size):
        batch = []
        for im in images[i: i + batch_size]:
            t = im if isinstance(im, Tensor) else decode_image_file(im).float().div_(255.0)
            batch.append(t.to(device))
        for o in model(batch):
            o = {k: v.to("cpu") for k, v in o.items()}
            if score_thresh is not None:
                keep = o["scores"] >= score_thresh
                o = {k: v[keep] for k, v in o.items()}
            outs.append(o)
    return outs


def coco_results(outputs: Sequence[dict[str, Tensor]], image_ids: Sequence[int], meta: dict[str, Any],
                 file_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh, ``score``; ``file_name`` when given)."""
    from spnas.detect.metrics import detections_to_coco

    label_to_cat = {c["label"]: c["category_id"] for c in meta["categories"]}
    res = detections_to_coco(outputs, image_ids, label_to_cat)
    if file_names is not None:
        name = dict(zip(image_ids, file_names))
        for r in res:
            r["file_name"] = name[r["image_id"]]
    return res


# ------------------------------------------------------------------------------ export
def _for_export(model: nn.Module) -> nn.Module:
    """An eval-mode copy whose transform is torchvision's own (multi-scale training is a training-only subclass)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from spnas.detect.distributed import for_export

    m = for_export(copy.deepcopy(model).to("cpu"))  # torchvision's samplers, BatchNorm for SyncBatchNorm2d
    t = m.transform
    if type(t) is not GeneralizedRCNNTransform:
        m.transform = GeneralizedRCNNTransform(t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible, t.fixed_size)
    for p in m.parameters():
        p.requires_grad_(False)
    return m.eval()  # last: a new transform starts in training mode, where it maps no box back to the image


def export_detector(model: nn.Module, path: str | os.PathLike, *, format: str = "torchscript", example: Tensor | None = None,
                    opset: int = 17) -> Path:
    """Write the whole detector to ``path`` as TorchScript (``torch.jit.script``) or ONNX (opset ``opset``).

    Either takes one ``(3, H, W)`` float RGB image in [0, 1], any H and W. TorchScript: ``m =
    torch.jit.load(path)``; ``losses, dets = m([image])`` (scripted torchvision detectors return both).
    ONNX: inputs ``image``, outputs ``boxes``, ``labels``, ``scores``; traced on ``example`` (default a
    random image of the detector's size) with H and W dynamic. ``spnas_meta`` travels in the file
    (TorchScript extra file ``spnas.json``, ONNX ``metadata_props``).
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"export: format {format!r} is not one of {', '.join(EXPORT_FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(getattr(model, "spnas_meta", {}))
    m = _for_export(model)
    with warnings.catch_warnings():  # both exporters are deprecated in favour of torch.export, and still supported
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", UserWarning)
        if format == "torchscript":
            scripted = torch.jit.script(m)
            torch.jit.save(scripted, str(path), _extra_files={"spnas.json": meta})
            return path
        try:
            import onnx
        except ImportError:
            raise ConfigError("export: format 'onnx' needs the onnx package: pip install 'spnas[export]'") from None
        if example is None:
            size = int(m.transform.min_size[-1])
            example = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.onnx.export(m, ([example],), str(path), dynamo=False, opset_version=opset, input_names=["image"],
                              output_names=["boxes", "labels", "scores"],
                              dynamic_axes={"image": [1, 2], "boxes": [0], "labels": [0], "scores": [0]})
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"spnas.json": meta})
    onnx.save(proto, str(path))
    return path


def run_exported(path: str | os.PathLike, image: Tensor) -> dict[str, Tensor]:
    """Detections of an exported detector on one ``(3, H, W)`` image (TorchScript by ``.pt``/``.ts``, else ONNX Runtime)."""
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("running an ONNX export needs onnxruntime: pip install 'spnas[export]'") from None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        boxes, labels, scores = sess.run(["boxes", "labels", "scores"], {"image": image.numpy()})
        return {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels), "scores": torch.from_numpy(scores)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message="RCNN always returns")  # scripted torchvision detectors say so on every call
        m = torch.jit.load(str(path))
        with torch.no_grad():
            _, dets = m([image])
    return {k: v for k, v in dets[0].items()}


def compare_detections(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Any]:
    """Max |Δ| of boxes and scores between two detection sets of one image, matched one to one.

    Detections are paired greedily in ``a``'s score order, each with the unpaired detection of ``b`` of
    the same label nearest in box and score (equal scores have no defined order, so position alone
    cannot pair them). ``same_count`` False (a detection at the score threshold kept by one side only)
    leaves the differences over the pairs found."""
    la, lb = a["labels"].long().tolist(), b["labels"].long().tolist()
    ba, bb = a["boxes"].double(), b["boxes"].double()
    sa, sb = a["scores"].double(), b["scores"].double()
    free = set(range(len(lb)))
    box_diff = score_diff = 0.0
    unpaired = 0
    for i in torch.argsort(-sa, stable=True).tolist():
        cands = [j for j in free if lb[j] == la[i]]
        if not cands:
            unpaired += 1
            continue
        j = min(cands, key=lambda j: float((ba[i] - bb[j]).abs().max() + (sa[i] - sb[j]).abs()))
        free.discard(j)
        box_diff = max(box_diff, float((ba[i] - bb[j]).abs().max()))
        score_diff = max(score_diff, float((sa[i] - sb[j]).abs()))
    return {"count": [len(la), len(lb)], "same_count": len(la) == len(lb), "labels_equal": unpaired == 0 and not free,
            "max_box_diff": box_diff, "max_score_diff": score_diff}
