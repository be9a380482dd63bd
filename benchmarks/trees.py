"""The evidence benchmarks' real data: aerial tree crowns from the deepforest 2.1.0 wheel, split so nothing leaks.

The wheel (``pip install --no-deps deepforest==2.1.0``; its files are read, the package is never
imported) ships four annotated RGB images from NEON sites at 10 cm per pixel, in VOC xml. Two are
from Yellowstone (YELL) and hold 853 of its 951 boxes; the two 400-px Florida/California crops hold
61 ``Tree`` boxes (OSBS_029) and 37 ``Dead`` ones (SOAP_061).

The split is by region of one image, with gaps, plus a second image for a transfer test; fixed, not
random (a random tile split, where a tile of one area trains and its overlapping neighbour validates,
measures memory rather than detection):

==========  ==========================================================  ================================
split       source                                                      used for
==========  ==========================================================  ================================
train       ``2019_YELL_2_528000_4978000_image_crop2``, rows 0-1279      every training, all arms
val         the same image, rows 1364-1875 (an 84-row gap, about two    every search decision
            median crowns, from the training rows)
test        the same image, rows 1960-2471 (another 84-row gap)         only the final measurements
other       ``2019_YELL_2_541000_4977000_image_crop`` (another image,    only the final measurements:
            13 km east)                                                 transfer to another place
==========  ==========================================================  ================================

A box belongs to a region when at least half of its area lies inside it (clipped to the region);
the gap rows hold no pixels of any split. Each region is a multiple of the 256-px tile high, so its
tiles do not overlap. ``prepare`` writes the crops (PNG) and one VOC xml per split into a directory,
once, and returns the splits as ``data:`` sections.

Why not the second image for validation: a start net trained from scratch on the first image reaches
validation AP50 0.05 there (0.38 on held-out rows of its own image), so every search decision would be
made at the floor of the metric. It stays as the ``other`` test split.
"""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

BIG = "2019_YELL_2_528000_4978000_image_crop2"
OTHER = "2019_YELL_2_541000_4977000_image_crop"
TRAIN_ROWS = (0, 1280)
VAL_ROWS = (1364, 1876)
TEST_ROWS = (1960, 2472)


def source_dir(given: str | None = None) -> Path:
    """The deepforest wheel's data directory (or ``given``); one clear line when absent."""
    if given:
        d = Path(given)
    else:
        spec = importlib.util.find_spec("deepforest")  # locates the files; the package is not imported
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("the tree data is missing: pip install --no-deps deepforest==2.1.0 (or pass --trees-dir DIR)")
        d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not (d / f"{BIG}.xml").is_file():
        raise SystemExit(f"{d}: no {BIG}.xml; expected the data directory of deepforest 2.1.0")
    return d


def _boxes(xml: Path) -> list[tuple[str, float, float, float, float]]:
    out = []
    for obj in ET.parse(xml).getroot().iter("object"):
        b = obj.find("bndbox")
        out.append((obj.findtext("name"), *(float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return out


def _write_region(src: Path, name: str, rows: tuple[int, int | None], out: Path, tag: str) -> int:
    img = Image.open(src / f"{name}.png").convert("RGB")
    W, H = img.size
    y0, y1 = rows[0], rows[1] if rows[1] is not None else H
    crop = img.crop((0, y0, W, y1))
    fname = f"{name}_{tag}.png"
    crop.save(out / fname)
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = fname
    size = ET.SubElement(root, "size")
    for k, v in (("width", W), ("height", y1 - y0), ("depth", 3)):
        ET.SubElement(size, k).text = str(v)
    n = 0
    for cls, bx0, by0, bx1, by1 in _boxes(src / f"{name}.xml"):
        cy0, cy1 = max(by0, y0), min(by1, y1)
        if cy1 <= cy0 or (cy1 - cy0) < 0.5 * (by1 - by0):
            continue
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = cls
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        for k, v in (("xmin", bx0), ("ymin", cy0 - y0), ("xmax", bx1), ("ymax", cy1 - y0)):
            ET.SubElement(bb, k).text = f"{v:.0f}"
        n += 1
    ET.ElementTree(root).write(out / f"{name}_{tag}.xml")
    return n


def prepare(out: str | Path, given: str | None = None) -> dict[str, dict]:
    """Write the split into ``out`` (once) and return ``{"train"|"val"|"test"|"other": data section}``."""
    out = Path(out)
    src = source_dir(given)
    done = out / "boxes.txt"
    if not done.is_file():
        out.mkdir(parents=True, exist_ok=True)
        counts = {"train": _write_region(src, BIG, TRAIN_ROWS, out, "train"),
                  "val": _write_region(src, BIG, VAL_ROWS, out, "val"),
                  "test": _write_region(src, BIG, TEST_ROWS, out, "test"),
                  "other": _write_region(src, OTHER, (0, None), out, "other")}
        done.write_text("".join(f"{k} {v}\n" for k, v in counts.items()))

    def section(tag: str, name: str) -> dict:
        return {"xml": str(out / f"{name}_{tag}.xml"), "images": str(out)}

    return {"train": section("train", BIG), "val": section("val", BIG), "test": section("test", BIG), "other": section("other", OTHER)}


def box_counts(out: str | Path) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in (Path(out) / "boxes.txt").read_text().splitlines())}
