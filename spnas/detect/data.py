"""Detection data: COCO json (pycocotools), VOC xml, and the built-in generated shapes set.

Every source becomes a :class:`DetectionDataset` over a pycocotools ``COCO`` index, so one
evaluation path serves all of them. Annotations are checked when loaded: a box wholly outside the image,
of zero or negative area, of an unknown category, or an image file that is missing is reported
with the file and id; with ``strict=True`` the first problem raises :class:`DataError`, otherwise
the bad annotations (or images) are dropped and the problems are kept in ``dataset.problems``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from spnas.errors import DataError

__all__ = ["DetectionDataset", "AugmentSampler", "ImageCache", "decode_image_file", "DEFAULT_CACHE_MB", "Problem", "load_coco", "load_voc", "load_ecp", "generate_shapes", "generate_ecp", "SHAPE_CLASSES",
           "collate", "tile_dataset"]

SHAPE_CLASSES = ("square", "disc", "triangle", "ring")
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Problem:
    """One annotation problem: where (file and id) and what."""

    file: str
    id: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: id {self.id}: {self.reason}"


class _Problems(list):
    """The problems a loader finds: each raised at once under ``strict`` (the first bad annotation stops
    the read), else kept to be warned about once and dropped."""

    def __init__(self, strict: bool) -> None:
        super().__init__()
        self.strict = strict

    def __call__(self, file: Any, id_: Any, reason: str) -> None:
        p = Problem(str(file), id_, reason)
        if self.strict:
            raise DataError(str(p))
        self.append(p)


def _checked_box(report: _Problems, file: Any, id_: Any, corners: tuple[float, float, float, float], shown: Any,
                 size: tuple[Any, Any], *, crossing: str) -> tuple[float, float, float, float] | None:
    """The one box check of every loader, on the corners ``x0, y0, x1, y1`` in pixels (``shown``: the box as
    the file writes it, for the message): four finite numbers, a positive size, a known image size,
    and on the image. A box that crosses the image's border is, by ``crossing``:

    - ``keep`` (COCO): kept as given; the reference evaluators (pycocotools, the CityPersons script)
      keep a person cut by the frame, so the metrics do, and training takes it clipped (``target``);
    - ``clip`` (ECP): clipped to the image, as the ECP toolkit does;
    - ``refuse`` (VOC): a wrong box when a corner lies more than 1 px outside (VOC's corners are
      1-based pixels, so 0 and W + 1 are still on the border).

    Returns the corners to use, or None after reporting why the box is dropped."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in corners):
        report(file, id_, f"box {shown!r} is not four finite numbers")
        return None
    x0, y0, x1, y1 = corners
    if x1 <= x0 or y1 <= y0:
        report(file, id_, f"box {shown} has zero or negative size")
        return None
    W, H = size
    if not (W and H):
        report(file, id_, "the image has no width/height, so its boxes cannot be checked")
        return None
    if crossing == "clip":
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(W)), min(y1, float(H))
        outside = x1 <= x0 or y1 <= y0
    elif crossing == "refuse":
        outside = x0 < -1 or y0 < -1 or x1 > W + 1 or y1 > H + 1
    else:
        outside = x0 >= W or y0 >= H or x1 <= 0 or y1 <= 0
    if outside:
        report(file, id_, f"box {shown} lies outside the {W}x{H} image")
        return None
    return x0, y0, x1, y1


def _quiet_coco(d: dict) -> COCO:
    coco = COCO()
    coco.dataset = d
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


DEFAULT_CACHE_MB = 512  # decoded images kept per process: a tile set decodes each big image once, COCO hardly repeats


class ImageCache:
    """A least-recently-used store of decoded images (uint8 tensors) under a byte budget.

    Views of one data set (``subset``, ``tile_dataset``) share it. It is never pickled with its contents:
    a DataLoader worker starts with an empty one of the same budget, so memory stays bounded by
    ``max_bytes`` per process whatever the data set's size. ``max_bytes=0`` keeps nothing.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_MB << 20) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> torch.Tensor | None:
        img = self._items.get(key)
        if img is not None:
            self._items.move_to_end(key)
        return img

    def put(self, key: str, img: torch.Tensor) -> None:
        size = img.numel() * img.element_size()
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old.numel() * old.element_size()
        self._items[key] = img
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])


DEFAULT_MAX_IMAGE_PIXELS = 178_956_970  # PIL's own hard limit (2 x its warning); a 16k x 11k image


def max_image_pixels() -> int:
    """The largest image (width x height) spnas decodes: ``SPNAS_MAX_IMAGE_PIXELS``, else PIL's limit."""
    v = os.environ.get("SPNAS_MAX_IMAGE_PIXELS")
    if v is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        n = int(v)
        if n < 1:
            raise ValueError
    except ValueError:
        raise DataError(f"SPNAS_MAX_IMAGE_PIXELS: expected a positive integer, got {v!r}") from None
    return n


def decode_image_file(path: str | os.PathLike) -> torch.Tensor:
    """An image file as a uint8 ``(3, H, W)`` RGB tensor, turned upright by its EXIF orientation.

    JPEG, PNG, GIF and WebP go through ``torchvision.io.decode_image`` (``apply_exif_orientation``;
    torchvision 0.29 marks its decoders deprecated in favour of TorchCodec, a further dependency, so
    the warning is silenced here); other formats (TIFF, BMP) through PIL with ``ImageOps.exif_transpose``.
    A file that does not decode raises :class:`DataError` naming it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_image, read_file

    path = Path(path)
    try:
        with Image.open(path) as im:  # the header only: refuse what would not fit before decoding it
            w, h = im.size
        if w * h > max_image_pixels():
            raise DataError(f"{path}: {w} x {h} pixels is more than {max_image_pixels():,} (SPNAS_MAX_IMAGE_PIXELS); "
                            "tile or shrink it, or raise the cap")
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif", ".webp"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                img = decode_image(read_file(str(path)), mode=ImageReadMode.RGB, apply_exif_orientation=True)
            if img.dtype == torch.uint8:
                return img
            if img.dtype == torch.uint16:  # a 16-bit PNG: its top 8 bits (it decoded to near-white as uint8 before)
                return (img.to(torch.int32) >> 8).to(torch.uint8)
        from PIL import ImageOps

        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16"):  # 16-bit grey (TIFF, PNG): scaled, not clipped to white
                arr = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
                arr = np.repeat(arr[..., None], 3, axis=2)
            elif im.mode in ("I", "F"):
                raise DataError(f"{path}: a {im.mode!r} image (32-bit integer or float pixels) has no one scale to 8-bit RGB; "
                                "convert it to 8 or 16 bits per channel")
            else:
                arr = np.asarray(im.convert("RGB"))
        return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
    except DataError:
        raise
    except (OSError, ValueError, RuntimeError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


class DetectionDataset(Dataset):
    """Images and boxes over a COCO index; labels are contiguous ``1..C`` (0 is background).

    ``dataset[i] -> (image float CHW in [0, 1], {"boxes": xyxy float, "labels": int64, "image_id": int})``.
    ``dataset[(i, flip)]`` mirrors sample ``i`` when ``flip`` (``transforms.v2`` on a ``tv_tensors.Image``
    and its ``tv_tensors.BoundingBoxes``): :class:`AugmentSampler` draws these keys, so the augmentation
    is decided in the loader's process and is the same with any number of DataLoader workers.
    ``transforms``: a further ``transforms.v2`` callable ``(image, boxes) -> (image, boxes)``.

    Images are decoded EXIF-aware (:func:`decode_image_file`) and checked against the annotation's
    size (a tile against its source image's); decoded images are kept in a bounded
    :class:`ImageCache` (``cache_mb`` per process).
    """

    def __init__(self, coco: COCO, image_dir: str | os.PathLike, *, problems: list[Problem] | None = None,
                 cache: ImageCache | None = None, transforms: Any = None, ignore_other_vru: bool = False) -> None:
        self.coco = coco
        self.ignore_other_vru = bool(ignore_other_vru)  # ECP miss rates: riders ignored (True) or discarded (False)
        self.image_dir = Path(image_dir)
        self.cat_ids = sorted(coco.getCatIds())
        self.cat_to_label = {c: i + 1 for i, c in enumerate(self.cat_ids)}
        self.label_to_cat = {v: k for k, v in self.cat_to_label.items()}
        self.class_names = [coco.cats[c]["name"] for c in self.cat_ids]
        self.image_ids = sorted(coco.getImgIds())
        self.problems = list(problems or [])
        self.transforms = transforms
        self.cache = cache if cache is not None else ImageCache()

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    @property
    def lamr_protocol(self) -> str | None:
        """``"ecp"`` for ECP frames (annotations carry ``ecp_ignore``), ``"citypersons"`` for
        CityPersons-style COCO (``vis_ratio``), else None: which miss-rate protocol fits the data."""
        anns = self.coco.dataset.get("annotations", [])
        if any("ecp_ignore" in a for a in anns):
            return "ecp"
        if any("vis_ratio" in a for a in anns):
            return "citypersons"
        return None

    def __len__(self) -> int:
        return len(self.image_ids)

    def set_cache_mb(self, mb: int) -> None:
        """Bound the decoded-image cache to ``mb`` MiB (0: none); views (``subset``, tiles) made after this share it."""
        self.cache = ImageCache(int(mb) << 20)

    def subset(self, image_ids: list[int]) -> DetectionDataset:
        d = self.coco.dataset
        keep = set(image_ids)
        sub = {
            "images": [im for im in d["images"] if im["id"] in keep],
            "annotations": [a for a in d["annotations"] if a["image_id"] in keep],
            "categories": d["categories"],
        }
        return DetectionDataset(_quiet_coco(sub), self.image_dir, problems=self.problems, cache=self.cache, transforms=self.transforms,
                                ignore_other_vru=self.ignore_other_vru)

    def load_image(self, image_id: int) -> torch.Tensor:
        """The uint8 ``(3, H, W)`` pixels of ``image_id`` (a tile: its crop of the source image)."""
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        key = str(path)
        img = self.cache.get(key)
        if img is None:
            img = decode_image_file(path)
            expected = info.get("source_size") or ([info["width"], info["height"]] if "crop" not in info else None)
            if expected is not None and [img.shape[2], img.shape[1]] != list(expected):
                raise DataError(f"{path}: image {image_id} decodes to {img.shape[2]}x{img.shape[1]} (EXIF orientation applied), "
                                f"the annotation says {expected[0]}x{expected[1]}: its boxes would not fit")
            self.cache.put(key, img)
        if "crop" in info:  # a tile of a larger image
            x0, y0, x1, y1 = info["crop"]
            img = img[:, y0:y1, x0:x1]
        return img

    def target(self, image_id: int) -> dict[str, torch.Tensor]:
        """Boxes (xyxy) and labels of the objects to train on (crowd and ignore regions are not objects)."""
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0) and not a.get("ignore", 0)]
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
                             dtype=torch.float32).reshape(-1, 4)
        info = self.coco.imgs[image_id]
        if len(boxes) and info.get("width") and info.get("height"):  # a box crossing the border is trained on its visible part
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, float(info["width"]))
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, float(info["height"]))
        labels = torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.int64)
        return {"boxes": boxes, "labels": labels, "image_id": torch.tensor(image_id)}

    def __getitem__(self, key: int | tuple[int, bool]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        i, flip = (int(key[0]), bool(key[1])) if isinstance(key, tuple) else (int(key), False)
        image_id = self.image_ids[i]
        img = tv_tensors.Image(self.load_image(image_id))  # first: it checks the annotation's size against the file
        target = self.target(image_id)
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=tuple(img.shape[-2:]))
        if flip:
            img, boxes = TF.horizontal_flip(img), TF.horizontal_flip(boxes)
        if self.transforms is not None:
            img, boxes = self.transforms(img, boxes)
        img = TF.to_dtype(img, torch.float32, scale=True)
        target["boxes"] = boxes.as_subclass(torch.Tensor)
        return img.as_subclass(torch.Tensor), target


class AugmentSampler(torch.utils.data.Sampler):
    """A shuffled epoch of ``(index, flip)`` keys drawn from ``generator`` in the loader's process.

    The augmentation is decided here, not in the workers, so a training run is the same with 0 or N
    DataLoader workers and the same seed.
    """

    def __init__(self, n: int, *, generator: torch.Generator, flip: bool = True, shuffle: bool = True) -> None:
        self.n, self.generator, self.flip, self.shuffle = n, generator, flip, shuffle

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator).tolist() if self.shuffle else list(range(self.n))
        flips = (torch.rand(self.n, generator=self.generator) < 0.5).tolist() if self.flip else [False] * self.n
        return iter(list(zip(order, flips)))


def collate(batch: list) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    imgs, targets = zip(*batch)
    return list(imgs), list(targets)


def _check(d: dict, image_dir: Path, where: str, strict: bool) -> tuple[dict, list[Problem]]:
    """Validate a COCO dict: returns a cleaned copy and the problems found."""
    report = _Problems(strict)
    _structure(d, where)
    cats = {c["id"] for c in d["categories"]}
    seen_anns: set[int] = set()
    seen_files: dict[str, Any] = {}
    seen_boxes: dict[tuple, Any] = {}
    images = {}
    for im in d["images"]:
        path = image_dir / str(im.get("file_name", ""))
        if not _is_file(path):
            report(str(path), im.get("id"), "image file is missing")
            continue
        if strict:  # a corrupt or mis-sized file is found now, not in the middle of a search
            w, h = _probe(path)
            if (im.get("width"), im.get("height")) != (w, h):
                report(str(path), im.get("id"), f"the file is {w}x{h}, the annotation says {im.get('width')}x{im.get('height')}")
        key = os.path.normpath(str(path))
        if key in seen_files:  # one picture counted twice: its boxes would weigh double in training and AP
            report(where, im.get("id"), f"duplicate image: {im.get('file_name')} is also image id {seen_files[key]}")
            continue
        seen_files[key] = im["id"]
        images[im["id"]] = im
    anns = []
    for a in d["annotations"]:
        if a["id"] in seen_anns:
            report(where, a["id"], "duplicate annotation id")
            continue
        seen_anns.add(a["id"])
        dup = (a.get("image_id"), a.get("category_id"), repr(a.get("bbox")))
        if dup in seen_boxes:  # the same object twice: one of the two is a false negative in evaluation
            report(where, a["id"], f"duplicate box: same image, category and bbox as annotation {seen_boxes[dup]}")
            continue
        seen_boxes[dup] = a["id"]
        im = images.get(a.get("image_id"))
        if im is None:
            if a.get("image_id") not in {i.get("id") for i in d["images"]}:
                report(where, a.get("id"), f"annotation refers to unknown image id {a.get('image_id')}")
            continue
        if a.get("category_id") not in cats:
            report(where, a.get("id"), f"unknown category id {a.get('category_id')}")
            continue
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            report(where, a.get("id"), f"expected bbox [x, y, w, h] of finite numbers, got {bbox!r}")
            continue
        x, y, w, h = bbox
        if _checked_box(report, where, a.get("id"), (x, y, x + w, y + h), bbox, (im.get("width"), im.get("height")), crossing="keep"):
            anns.append(a)  # as given; crowd regions stay: pycocotools evaluates them as ignore, training skips them
    if not anns:
        report(where, None, "no usable annotation: nothing to train or evaluate on")
    clean = {**d, "images": list(images.values()), "annotations": anns}
    return clean, report


def _number(text: str | None) -> float | None:
    """A finite number from an xml field, else None."""
    try:
        v = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _probe(path: Path) -> tuple[int, int]:
    """An image's (width, height) after checking that it decodes (PIL ``verify``: headers and checksums)."""
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    return size


def _image_size(path: Path, declared: tuple[int, int] | None, what: str, strict: bool) -> tuple[int, int]:
    """The annotation's (width, height) where it gives a usable one (checked against the file under
    ``strict``), else the file's own; the file is read at most once."""
    if declared is None:
        return _probe(path)
    if strict:
        actual = _probe(path)
        if actual != declared:
            raise DataError(f"{what} says {declared[0]}x{declared[1]}, the image {path} is {actual[0]}x{actual[1]}")
    return declared


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where the name itself is unusable (too long, a NUL byte)."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _structure(d: Any, where: str) -> None:
    """The COCO layout itself (types, ids, required fields); a malformed file is an error, strict or not."""

    def bad(field: str, want: str, got: Any) -> DataError:
        return DataError(f"{where}: {field}: expected {want}, got {str(got)[:60]!r}")

    def int_id(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(d, dict):
        raise bad("top level", "a mapping with images, annotations and categories", type(d).__name__)
    for key in ("images", "annotations", "categories"):
        if not isinstance(d.get(key), list):
            raise bad(key, "a list", type(d.get(key)).__name__)
        for i, e in enumerate(d[key]):
            if not isinstance(e, dict):
                raise bad(f"{key}[{i}]", "a mapping", e)
            if not int_id(e.get("id")):
                raise bad(f"{key}[{i}].id", "an int", e.get("id"))
    for key in ("images", "categories"):
        ids = [e["id"] for e in d[key]]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"{where}: {key}: id {dup} appears more than once")
    for i, c in enumerate(d["categories"]):
        if not isinstance(c.get("name"), str):
            raise bad(f"categories[{i}].name", "a string", c.get("name"))
    for i, im in enumerate(d["images"]):
        if not isinstance(im.get("file_name"), str):
            raise bad(f"images[{i}].file_name", "a string", im.get("file_name"))
        for k in ("width", "height"):
            if k in im and not (int_id(im[k]) and im[k] > 0):
                raise bad(f"images[{i}].{k}", "a positive int", im[k])
    for i, a in enumerate(d["annotations"]):
        for k in ("image_id", "category_id"):
            if not int_id(a.get(k)):
                raise bad(f"annotations[{i}].{k}", "an int", a.get(k))
        for k in ("iscrowd", "ignore"):  # yes/no fields: a string "0" or "no" would read as yes
            if k in a and (isinstance(a[k], str) or a[k] not in (0, 1)):
                raise bad(f"annotations[{i}].{k}", "0 or 1", a[k])


def _warn(problems: list[Problem], where: str) -> None:
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        warnings.warn(f"{where}: dropped {len(problems)} bad annotation(s): " + "; ".join(map(str, problems[:3])) + more, stacklevel=3)


def load_coco(json_path: str | os.PathLike, image_dir: str | os.PathLike | None = None, *, strict: bool = False) -> DetectionDataset:
    """A COCO-json data set; ``image_dir`` defaults to the json's folder (or its ``images/``)."""
    jp = Path(json_path)
    try:
        d = json.loads(jp.read_text())
    except FileNotFoundError:
        raise DataError(f"{jp}: no such annotation file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{jp}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if image_dir is None:
        image_dir = jp.parent / "images" if (jp.parent / "images").is_dir() else jp.parent
    clean, problems = _check(d, Path(image_dir), str(jp), strict)
    _warn(problems, str(jp))
    return DetectionDataset(_quiet_coco(clean), image_dir, problems=problems)


def load_voc(
    xml_files: list[str | os.PathLike] | str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    *,
    classes: list[str] | None = None,
    strict: bool = False,
    unknown_class_is_error: bool = False,
) -> DetectionDataset:
    """VOC xml annotations (a directory or a list of files) as a COCO-indexed data set.

    ``classes`` fixes the category order (else sorted names found); a name outside it is an
    unknown class, dropped with a warning, or an error with ``unknown_class_is_error`` (a validation
    split read with the training split's classes: its labels must mean the same). ``difficult`` objects become crowd regions: evaluated as ignore, not trained on.
    An image is looked up by ``<filename>``, then by the xml's stem with a common extension.
    """
    if isinstance(xml_files, (str, os.PathLike)):
        p = Path(xml_files)
        files = sorted(p.glob("*.xml")) if p.is_dir() else [p]
    else:
        files = [Path(f) for f in xml_files]
    if not files:
        raise DataError(f"{xml_files}: no VOC xml files found")
    parsed = []
    names = set()
    for f in files:
        try:
            root = ET.parse(f).getroot()
        except (ET.ParseError, OSError) as e:
            raise DataError(f"{f}: not a readable VOC xml file ({e})") from None
        objs = []
        for i, o in enumerate(root.findall("object")):
            name = (o.findtext("name") or "").strip()
            bb = o.find("bndbox")
            box = None if bb is None else [_number(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            box = None if box is None or None in box else box
            difficult = (o.findtext("difficult") or "0").strip()
            objs.append((i, name, box, {"0": 0, "1": 1}.get(difficult, difficult)))
            names.add(name)
        parsed.append((f, root, objs))
    classes = list(classes) if classes else sorted(names)
    cat_of = {n: i + 1 for i, n in enumerate(classes)}
    images, anns, problems = [], [], _Problems(strict)
    img_dir = Path(image_dir) if image_dir else None
    seen_files: dict[str, Path] = {}
    for img_id, (f, root, objs) in enumerate(parsed, start=1):
        base = img_dir or f.parent
        fname = (root.findtext("filename") or "").strip()
        path = base / fname
        if not _is_file(path):
            alt = [base / (f.stem + e) for e in _IMAGE_EXTS if _is_file(base / (f.stem + e))]
            if not alt:
                problems(f, fname or f.stem, f"image file {path} is missing")
                continue
            path = alt[0]
        key = os.path.normpath(str(path))
        if key in seen_files:
            problems(f, fname or f.stem, f"duplicate image: {path} is also annotated by {seen_files[key]}")
            continue
        seen_files[key] = f
        w, h = (_number(root.findtext(f"size/{k}")) for k in ("width", "height"))
        usable = bool(w and h and w >= 1 and h >= 1 and w == int(w) and h == int(h))
        if not usable and strict and root.find("size") is not None:
            raise DataError(f"{f}: <size> must hold positive integer width and height, got {w}x{h}")
        w, h = _image_size(path, (int(w), int(h)) if usable else None, f"{f}: <size>", strict)
        images.append({"id": img_id, "file_name": os.path.relpath(path, base), "width": w, "height": h})
        seen_objs: dict[tuple, int] = {}
        for i, name, box, difficult in objs:
            aid, where = len(anns) + len(problems) + 1, f"object #{i}"
            if name not in cat_of and unknown_class_is_error:
                raise DataError(f"{f}: object #{i}: class {name!r} is not among the training classes {classes}; "
                                "list every class under data.classes")
            reason = (f"unknown class {name!r}, expected one of {classes}" if name not in cat_of
                      else "missing or non-numeric bndbox (xmin, ymin, xmax, ymax: finite numbers)" if box is None
                      else f"<difficult> must be 0 or 1, got {str(difficult)[:40]!r}" if difficult not in (0, 1) else None)
            if reason:
                problems(f, where, reason)
                continue
            if _checked_box(problems, f, where, tuple(box), box, (w, h), crossing="refuse") is None:
                continue
            if (name, *box) in seen_objs:
                problems(f, where, f"duplicate box: same class and bndbox as object #{seen_objs[(name, *box)]}")
                continue
            seen_objs[(name, *box)] = i
            x0, y0, x1, y1 = box
            anns.append({"id": aid, "image_id": img_id, "category_id": cat_of[name], "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": (x1 - x0) * (y1 - y0), "iscrowd": difficult, "ignore": difficult})
    if not anns:
        problems(files[0].parent, None, "no usable annotation: nothing to train or evaluate on")
    d = {"images": images, "annotations": anns, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}
    _warn(problems, str(files[0].parent))
    common = img_dir or files[0].parent
    return DetectionDataset(_quiet_coco(d), common, problems=problems)


# ------------------------------------------------------------------------------ EuroCity Persons
ECP_PERSON = "pedestrian"
ECP_TOLERATED = ("rider",)  # the benchmark ignores riders when pedestrians are evaluated (ignore_other_vru)
ECP_CROWD = "person-group-far-away"  # a don't-care region: detections inside it are neither found nor false
ECP_IGNORED_TAGS = ("sitting-lying", "behind-glass")
_ECP_NUMBER = re.compile(r"\d+")


def _ecp_percent(tags: list[str], word: str) -> int:
    """The number of the ``occluded>40``-style tag (the toolkit's rule: one number in a tag holding ``word``)."""
    value = 0
    for t in tags:
        if word in t:
            found = _ECP_NUMBER.findall(t)
            if len(found) == 1:
                value = int(found[0])
    return value


def load_ecp(
    label_dir: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    *,
    classes: list[str] | None = None,
    strict: bool = False,
    ignore_other_vru: bool = False,
) -> DetectionDataset:
    """EuroCity Persons frames (``labels/<split>/<city>/<city>_<n>.json``) as a COCO-indexed data set.

    Each frame's ``children`` with ``identity`` ``pedestrian`` are the objects to find; ``rider``
    (tolerated), ``person-group-far-away`` (a crowd region; with a ``depiction`` tag it is dropped)
    and pedestrians tagged ``sitting-lying`` or ``behind-glass`` are kept as ignored boxes
    (``iscrowd``: not trained on, ignored by the metrics); other identities are dropped, as the ECP
    toolkit drops them. Each annotation keeps ``ecp_ignore`` (0, 1 or 2: see
    :func:`~spnas.detect.metrics.ecp_lamr`), ``occlusion`` and ``truncation`` (the tags' numbers).
    ``classes`` (default ``["pedestrian"]``; add ``"rider"`` to detect riders too) are the training
    classes. ``ignore_other_vru`` is the toolkit's switch of that name for the miss rates: False (the
    benchmark server's setting, the default) discards riders from the pedestrian ground truth, so a
    pedestrian detection on a rider is a false positive; True keeps them as ignored boxes, so it is
    not (the toolkit's ``ParamsFactory`` default, reported as "ignore" beside "noignore"). The image of ``labels/x/y.json`` is ``image_dir/x/y.png`` (``.jpg`` also); without
    ``image_dir`` the path's ``labels`` folder is replaced by ``img``, the ECP layout.
    """
    root = Path(label_dir)
    files = sorted(root.rglob("*.json")) if root.is_dir() else []
    if not files:
        raise DataError(f"{root}: no ECP frame files (*.json) found")
    if image_dir is None:
        parts = list(root.resolve().parts)
        if "labels" not in parts:
            raise DataError(f"{root}: give the images' folder (data.<split>.images): the path holds no 'labels' folder to map to 'img'")
        i = len(parts) - 1 - parts[::-1].index("labels")
        image_root = Path(*parts[:i], "img", *parts[i + 1:])
    else:
        image_root = Path(image_dir)
    classes = list(classes or [ECP_PERSON])
    if ECP_PERSON not in classes:
        raise DataError(f"{root}: classes {classes} must include {ECP_PERSON!r}, the class the benchmark measures")
    cat_of = {n: k + 1 for k, n in enumerate(classes)}
    images, anns, problems = [], [], _Problems(strict)
    for img_id, f in enumerate(files, start=1):
        try:
            frame = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{f}: cannot read ({e})") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{f}: line {e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(frame, dict) or frame.get("identity") != "frame" or not isinstance(frame.get("children"), list):
            raise DataError(f"{f}: expected an ECP frame: an object with identity 'frame' and a list of children")
        rel = f.relative_to(root).with_suffix("")
        path = next((image_root / rel.with_suffix(e) for e in (".png", ".jpg", ".jpeg") if _is_file(image_root / rel.with_suffix(e))), None)
        if path is None:
            problems(f, str(rel), f"image file {image_root / rel}.png is missing")
            continue
        w, h = frame.get("imagewidth"), frame.get("imageheight")
        usable = isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0
        w, h = _image_size(path, (w, h) if usable else None, f"{f}: imagewidth x imageheight", strict)
        images.append({"id": img_id, "file_name": os.path.relpath(path, image_root), "width": w, "height": h})
        for i, o in enumerate(frame["children"]):
            if not isinstance(o, dict):
                problems(f, f"child #{i}", "expected an object")
                continue
            ident = o.get("identity")
            tags = o.get("tags") or []
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                problems(f, f"child #{i}", f"tags: expected a list of strings, got {str(tags)[:60]}")
                continue
            if ident == ECP_PERSON:
                ignore = 1 if any(t in ECP_IGNORED_TAGS for t in tags) else 0
            elif ident in ECP_TOLERATED:
                ignore = 0 if ident in cat_of else 1
            elif ident == ECP_CROWD:
                if "depiction" in tags:
                    continue
                ignore = 2
            else:
                continue  # a vehicle, a bicycle, ...: not part of the person benchmark
            try:
                x0, y0, x1, y1 = (float(o[k]) for k in ("x0", "y0", "x1", "y1"))
            except (KeyError, TypeError, ValueError):
                problems(f, f"child #{i}", "x0, y0, x1, y1: missing or not numbers")
                continue
            box = _checked_box(problems, f, f"child #{i}", (x0, y0, x1, y1), [x0, y0, x1, y1], (w, h), crossing="clip")
            if box is None:
                continue
            x0, y0, x1, y1 = box
            cat = cat_of.get(ident, cat_of[ECP_PERSON])  # ignored riders and crowd regions sit with the pedestrians
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat, "bbox": [x0, y0, x1 - x0, y1 - y0],
                         "area": (x1 - x0) * (y1 - y0), "iscrowd": int(ignore != 0), "ecp_identity": ident, "ecp_ignore": ignore,
                         "occlusion": _ecp_percent(tags, "occluded"), "truncation": _ecp_percent(tags, "truncated")})
    if not any(a["ecp_ignore"] == 0 for a in anns):
        problems(root, None, "no pedestrian to find: nothing to train or evaluate on")
    d = {"images": images, "annotations": anns, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(classes)]}
    _warn(problems, str(root))
    return DetectionDataset(_quiet_coco(d), image_root, problems=problems, ignore_other_vru=ignore_other_vru)


def generate_ecp(out_dir: str | os.PathLike, *, n_frames: int = 8, size: tuple[int, int] = (160, 96), seed: int = 0, split: str = "val") -> Path:
    """A small ECP-format set for tests and examples: ``out_dir/labels/<split>/town/town_<n>.json`` and
    ``out_dir/img/<split>/town/town_<n>.png``. Upright figures (pedestrians: a head and a body; riders:
    a figure on a wheel) 20-70 px tall over a textured background, with ECP's tags: occlusion
    (``occluded>10/40/80``, drawn as a grey block over the lower body), truncation at the border,
    ``sitting-lying``, and crowd regions. Returns the labels folder of the split.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    W, H = size
    lab, img_dir = out / "labels" / split / "town", out / "img" / split / "town"
    lab.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    for n in range(n_frames):
        bg, img = textured_background(rng, max(W, H))
        img = img.crop((0, 0, W, H))
        draw = ImageDraw.Draw(img)
        children = []
        for _ in range(int(rng.integers(2, 6))):
            h = int(rng.integers(20, 71))
            w = max(6, int(h * rng.uniform(0.35, 0.45)))
            x0 = int(rng.integers(-w // 3, W - w + w // 3))
            y0 = int(rng.integers(0, max(1, H - h)))
            ident = str(rng.choice(["pedestrian"] * 6 + ["rider", "person-group-far-away"]))
            colour = contrasting_colour(rng, bg)
            x1, y1 = x0 + w, y0 + h
            if ident == "person-group-far-away":
                for k in range(3):
                    draw.ellipse((x0 + k * w // 3, y0, x0 + k * w // 3 + w // 3, y0 + h // 4), fill=colour)
            else:
                draw.ellipse((x0 + w // 4, y0, x1 - w // 4, y0 + h // 5), fill=colour)  # head
                draw.rectangle((x0, y0 + h // 5, x1, y1 if ident == "pedestrian" else y1 - h // 4), fill=colour)
                if ident == "rider":
                    draw.ellipse((x0 - w // 4, y1 - h // 4, x1 + w // 4, y1), outline=colour, width=2)
            tags = []
            occ = int(rng.choice([0, 0, 0, 10, 40, 80]))
            if occ and ident != "person-group-far-away":
                draw.rectangle((x0, y1 - int(h * occ / 100), x1, y1), fill=(128, 128, 128))
                tags.append(f"occluded>{occ}")
            if x0 < 0 or x1 > W:
                tags.append("truncated>10")
            if ident == "pedestrian" and rng.random() < 0.1:
                tags.append("sitting-lying")
            children.append({"identity": ident, "x0": x0, "y0": y0, "x1": x1, "y1": y1, "tags": tags, "children": []})
        name = f"town_{n:05d}"
        img.save(img_dir / f"{name}.png")
        frame = {"identity": "frame", "imagewidth": W, "imageheight": H, "children": children}
        (lab / f"{name}.json").write_text(json.dumps(frame))
    return out / "labels" / split


def tile_dataset(ds: DetectionDataset, tile: int, *, min_visible: float = 0.5) -> DetectionDataset:
    """Cut every image into ``tile`` x ``tile`` crops (edge tiles shifted inside); boxes are clipped,
    and kept when at least ``min_visible`` of their area lies in the tile."""
    d = ds.coco.dataset
    images, anns = [], []
    for im in d["images"]:
        W, H = im["width"], im["height"]
        xs = sorted({min(x, max(W - tile, 0)) for x in range(0, max(W - tile, 0) + tile, tile)})
        ys = sorted({min(y, max(H - tile, 0)) for y in range(0, max(H - tile, 0) + tile, tile)})
        for y0 in ys:
            for x0 in xs:
                x1, y1 = min(x0 + tile, W), min(y0 + tile, H)
                tid = len(images) + 1
                images.append({"id": tid, "file_name": im["file_name"], "width": x1 - x0, "height": y1 - y0,
                               "crop": [x0, y0, x1, y1], "source_id": im["id"], "source_size": [W, H]})
                for a in ds.coco.imgToAnns.get(im["id"], []):
                    bx, by, bw, bh = a["bbox"]
                    cx0, cy0 = max(bx, x0), max(by, y0)
                    cx1, cy1 = min(bx + bw, x1), min(by + bh, y1)
                    if cx1 <= cx0 or cy1 <= cy0 or (cx1 - cx0) * (cy1 - cy0) < min_visible * bw * bh:
                        continue
                    anns.append({**a, "id": len(anns) + 1, "image_id": tid, "bbox": [cx0 - x0, cy0 - y0, cx1 - cx0, cy1 - cy0],
                                 "area": (cx1 - cx0) * (cy1 - cy0)})
    return DetectionDataset(_quiet_coco({"images": images, "annotations": anns, "categories": d["categories"]}), ds.image_dir,
                            problems=ds.problems, cache=ds.cache, ignore_other_vru=ds.ignore_other_vru)


# ------------------------------------------------------------------------------ the generated set
def _draw_shape(draw: ImageDraw.ImageDraw, cls: int, box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if cls == 0:
        draw.rectangle(box, fill=colour)
    elif cls == 1:
        draw.ellipse(box, fill=colour)
    elif cls == 2:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
    else:
        t = max(2, (x1 - x0) // 5)
        draw.ellipse(box, outline=colour, width=t)


def textured_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Image.Image]:
    """A random base colour with Gaussian texture; returns (base colour, image)."""
    bg = rng.integers(40, 200, size=3)
    arr = (bg + rng.normal(0, 18, size=(size, size, 3))).clip(0, 255).astype(np.uint8)
    return bg, Image.fromarray(arr)


def contrasting_colour(rng: np.random.Generator, bg: np.ndarray) -> tuple[int, int, int]:
    """A colour 60-120 levels away from ``bg`` in each channel."""
    return tuple(int(v) for v in (bg + rng.choice([-1, 1], 3) * rng.integers(60, 120, 3)).clip(0, 255))


def _covered(old: list[int], new: tuple[int, int, int, int]) -> float:
    """Fraction of box ``old`` (x, y, w, h) that ``new`` covers."""
    ix = max(0, min(old[0] + old[2], new[0] + new[2]) - max(old[0], new[0]))
    iy = max(0, min(old[1] + old[3], new[1] + new[3]) - max(old[1], new[1]))
    return ix * iy / max(old[2] * old[3], 1)


def generate_shapes(
    out_dir: str | os.PathLike, *, n_images: int = 64, size: int = 256, seed: int = 0, split: str = "train"
) -> Path:
    """Write the built-in data set: ``out_dir/<split>.json`` (COCO) and ``out_dir/images/<split>_*.png``.

    Four classes (square, disc, triangle, ring) of 12-110 px in random colours, 2-7 per image,
    overlapping (the later one occludes), over a textured background with distractor lines.
    The same seed writes the same files. Files are keyed by every parameter
    (``<split>-<n>x<size>px-seed<seed>.json``, ``images/<key>_<i>.png``), so searches that share
    ``out_dir`` with different settings never read each other's set. Returns the json path; an
    existing one is reused.
    """
    out = Path(out_dir)
    key = f"{split}-{n_images}x{size}px-seed{seed}"
    jp = out / f"{key}.json"
    if jp.is_file():
        return jp
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for i in range(n_images):
        bg, img = textured_background(rng, size)
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 6))):  # clutter: lines that are no object
            pts = [tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(2)]
            draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
        placed = []
        for _ in range(int(rng.integers(2, 8))):
            s = int(np.exp(rng.uniform(np.log(12), np.log(110))))
            w = int(s * rng.uniform(0.75, 1.33))
            h = s
            x0 = int(rng.integers(0, max(1, size - w)))
            y0 = int(rng.integers(0, max(1, size - h)))
            if any(_covered(b, (x0, y0, w, h)) > 0.6 for _, b in placed):
                continue  # would hide an earlier object: occlusion, yes; invisible objects, no
            cls = int(rng.integers(0, len(SHAPE_CLASSES)))
            _draw_shape(draw, cls, (x0, y0, x0 + w, y0 + h), contrasting_colour(rng, bg))
            placed.append((cls, [x0, y0, w + 1, h + 1]))
        fname = f"{key}_{i:05d}.png"
        img.save(out / "images" / fname)
        images.append({"id": i + 1, "file_name": fname, "width": size, "height": size})
        for cls, bbox in placed:
            bbox = [float(bbox[0]), float(bbox[1]), float(min(bbox[2], size - bbox[0])), float(min(bbox[3], size - bbox[1]))]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})
    d = {"info": {"description": "spnas generated shapes", "split": split, "n_images": n_images, "size": size, "seed": seed},
         "images": images, "annotations": anns, "categories": [{"id": i + 1, "name": n} for i, n in enumerate(SHAPE_CLASSES)]}
    tmp = jp.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(d))
    os.replace(tmp, jp)
    return jp
