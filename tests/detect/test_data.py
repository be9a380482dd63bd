import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spnas.detect.data import generate_shapes, load_coco, load_voc, tile_dataset
from spnas.errors import DataError


def test_generated_set_is_seeded(tmp_path):
    a = generate_shapes(tmp_path / "a", n_images=6, size=96, seed=5)
    b = generate_shapes(tmp_path / "b", n_images=6, size=96, seed=5)
    c = generate_shapes(tmp_path / "c", n_images=6, size=96, seed=6)
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    assert (a.parent / f"images/{a.stem}_00000.png").read_bytes() == (b.parent / f"images/{b.stem}_00000.png").read_bytes()
    ds = load_coco(a)
    assert ds.num_classes == 4 and len(ds) == 6 and not ds.problems
    img, t = ds[0]
    assert img.shape == (3, 96, 96) and 0 <= float(img.min()) and float(img.max()) <= 1
    assert (t["boxes"][:, 2:] > t["boxes"][:, :2]).all() and t["labels"].min() >= 1


def _bad_coco(tmp_path):
    jp = generate_shapes(tmp_path, n_images=3, size=64, seed=0)
    d = json.loads(jp.read_text())
    d["annotations"][0]["bbox"][2] = 0  # zero width
    d["annotations"][1]["bbox"] = [66, 60, 30, 30]  # wholly outside the 64x64 image (one crossing its border is kept)
    d["annotations"][2]["category_id"] = 99
    d["images"].append({"id": 77, "file_name": "gone.png", "width": 64, "height": 64})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    return bad, d


def test_bad_annotations_reported_with_file_and_id(tmp_path):
    bad, d = _bad_coco(tmp_path)
    with pytest.warns(UserWarning, match="dropped 4 bad annotation"):
        ds = load_coco(bad, tmp_path / "images")
    text = [str(p) for p in ds.problems]
    assert any("gone.png: id 77: image file is missing" in t for t in text)
    assert any(f"bad.json: id {d['annotations'][0]['id']}: box {d['annotations'][0]['bbox']} has zero or negative size" in t for t in text)
    assert any("lies outside the 64x64 image" in t for t in text)
    assert any("unknown category id 99" in t for t in text)
    assert len(ds.coco.anns) == len(d["annotations"]) - 3


def test_strict_raises(tmp_path):
    bad, d = _bad_coco(tmp_path)
    with pytest.raises(DataError, match=r"gone.png: id 77: image file is missing"):
        load_coco(bad, tmp_path / "images", strict=True)


def test_bad_json_names_line(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"images": [\n  1,\n  }')
    with pytest.raises(DataError, match="x.json: line 3: not valid JSON"):
        load_coco(p)


VOC = """<annotation><filename>{f}</filename><size><width>64</width><height>64</height><depth>3</depth></size>
<object><name>tree</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object>
<object><name>{cls}</name><difficult>1</difficult><bndbox><xmin>30</xmin><ymin>30</ymin><xmax>40</xmax><ymax>40</ymax></bndbox></object>
</annotation>"""


def test_voc_loader(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    (tmp_path / "a.xml").write_text(VOC.format(f="a.tif", cls="tree"))  # the file is found by the xml's stem
    ds = load_voc(tmp_path)
    assert ds.class_names == ["tree"] and len(ds) == 1
    assert sum(a["iscrowd"] for a in ds.coco.anns.values()) == 1  # difficult -> crowd: evaluated as ignore
    img, t = ds[0]
    assert t["boxes"].tolist() == [[1.0, 2.0, 20.0, 30.0]]
    (tmp_path / "a.xml").write_text(VOC.format(f="a.png", cls="car"))
    with pytest.raises(DataError, match=r"a.xml: id object #1: unknown class 'car'"):
        load_voc(tmp_path, classes=["tree"], strict=True)


def test_tiles_clip_boxes(tmp_path):
    ds = load_coco(generate_shapes(tmp_path, n_images=2, size=96, seed=1))
    tiles = tile_dataset(ds, 48)
    assert len(tiles) == 8
    for i in range(len(tiles)):
        img, t = tiles[i]
        assert img.shape == (3, 48, 48)
        if len(t["boxes"]):
            assert float(t["boxes"].min()) >= 0 and float(t["boxes"].max()) <= 48


def test_one_class_list_for_both_voc_splits(tmp_path):
    """The validation split is read with the training split's classes; a class it alone has is an error, not a new label."""
    from PIL import Image

    from spnas.search.evaluator import load_datasets

    for split, cls in (("train", "tree"), ("val", "tree")):
        (tmp_path / split).mkdir()
        Image.new("RGB", (64, 64)).save(tmp_path / split / "a.png")
        (tmp_path / split / "a.xml").write_text(VOC.format(f="a.png", cls=cls))
    data = {"format": "voc", "train": {"xml": str(tmp_path / "train")}, "val": {"xml": str(tmp_path / "val")}, "classes": []}
    tr, va = load_datasets(data)
    assert tr.class_names == va.class_names == ["tree"]
    Image.new("RGB", (64, 64)).save(tmp_path / "val" / "b.png")
    (tmp_path / "val" / "b.xml").write_text(VOC.format(f="b.png", cls="car").replace("<name>tree</name>", "<name>car</name>"))
    with pytest.raises(DataError, match=r"b.xml: object #0: class 'car' is not among the training classes \['tree'\]"):
        load_datasets({**data, "strict": False, "val": {"xml": str(tmp_path / "val")}, "classes": None})


def test_coco_splits_must_share_categories(tmp_path):
    import json

    from spnas.search.evaluator import load_datasets

    tr = generate_shapes(tmp_path / "a", n_images=2, size=64, seed=0, split="train")
    va = generate_shapes(tmp_path / "a", n_images=2, size=64, seed=1, split="val")
    d = json.loads(Path(va).read_text())
    d["categories"][0]["name"] = "renamed"
    Path(va).write_text(json.dumps(d))
    with pytest.raises(DataError, match="categories differ from the training split's"):
        load_datasets({"format": "coco", "train": {"json": str(tr)}, "val": {"json": str(va)}})


def test_duplicates_are_errors_under_strict_and_warnings_otherwise(tmp_path):
    jp = generate_shapes(tmp_path, n_images=3, size=64, seed=0)
    d = json.loads(jp.read_text())
    d["images"].append({**d["images"][0], "id": 99})  # the same picture under a second id
    d["annotations"].append({**d["annotations"][0], "id": 999})  # the same object twice
    bad = tmp_path / "dup.json"
    bad.write_text(json.dumps(d))
    with pytest.warns(UserWarning, match="dropped 2 bad annotation"):
        ds = load_coco(bad, jp.parent / "images")
    text = [str(p) for p in ds.problems]
    assert any(f"dup.json: id 99: duplicate image: {d['images'][0]['file_name']} is also image id 1" in t for t in text)
    assert any(f"dup.json: id 999: duplicate box: same image, category and bbox as annotation {d['annotations'][0]['id']}" in t for t in text)
    assert len(ds) == 3 and len(ds.coco.anns) == len(d["annotations"]) - 1
    with pytest.raises(DataError, match="duplicate image"):
        load_coco(bad, jp.parent / "images", strict=True)


def test_voc_duplicates(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    (tmp_path / "a.xml").write_text(VOC.format(f="a.png", cls="tree"))
    (tmp_path / "b.xml").write_text(VOC.format(f="a.png", cls="tree"))  # a second xml for the same picture
    with pytest.warns(UserWarning):
        ds = load_voc(tmp_path)
    assert len(ds) == 1 and any("b.xml: id a.png: duplicate image" in str(p) for p in ds.problems)
    with pytest.raises(DataError, match=r"b.xml: id a.png: duplicate image: .*a.png is also annotated by .*a.xml"):
        load_voc(tmp_path, strict=True)
    (tmp_path / "b.xml").unlink()
    twice = VOC.format(f="a.png", cls="tree").replace("</annotation>", VOC.split("<object>")[1].join(["<object>", ""]) + "</annotation>")
    (tmp_path / "a.xml").write_text(twice)
    with pytest.raises(DataError, match=r"a.xml: id object #2: duplicate box: same class and bndbox as object #0"):
        load_voc(tmp_path, strict=True)


def test_strict_decodes_every_image_and_checks_its_size(tmp_path):
    jp = generate_shapes(tmp_path, n_images=2, size=64, seed=0)
    d = json.loads(jp.read_text())
    png = jp.parent / "images" / d["images"][1]["file_name"]
    data = png.read_bytes()
    png.write_bytes(data[: len(data) // 2])  # a truncated PNG: its header still reads
    load_coco(jp)  # not strict: found when the image is first decoded
    with pytest.raises(DataError, match=rf"{png.name}: cannot decode image"):
        load_coco(jp, strict=True)
    png.write_bytes(data)
    d["images"][1]["width"] = 65
    jp.write_text(json.dumps(d))
    with pytest.raises(DataError, match=r"the file is 64x64, the annotation says 65x64"):
        load_coco(jp, strict=True)


def test_generated_sets_are_keyed_by_their_parameters(tmp_path):
    """Two searches sharing one data.root with different settings never read each other's set."""
    a = generate_shapes(tmp_path, n_images=4, size=64, seed=0)
    b = generate_shapes(tmp_path, n_images=6, size=64, seed=0)
    c = generate_shapes(tmp_path, n_images=4, size=96, seed=0)
    assert len({a, b, c}) == 3
    assert [len(load_coco(p)) for p in (a, b, c)] == [4, 6, 4]
    assert load_coco(c)[0][0].shape == (3, 96, 96)
    assert generate_shapes(tmp_path, n_images=4, size=64, seed=0) == a  # the same parameters reuse the files


def test_ecp_loader_reads_the_benchmarks_rules(tmp_path):
    from PIL import Image

    from spnas.detect.data import load_ecp

    (tmp_path / "labels" / "val" / "x").mkdir(parents=True)
    (tmp_path / "img" / "val" / "x").mkdir(parents=True)
    Image.new("RGB", (200, 100)).save(tmp_path / "img" / "val" / "x" / "x_0.png")
    kids = [
        {"identity": "pedestrian", "x0": 10, "y0": 5, "x1": 30, "y1": 80, "tags": ["occluded>40", "truncated>10"]},
        {"identity": "pedestrian", "x0": 40, "y0": 5, "x1": 60, "y1": 80, "tags": ["sitting-lying"]},
        {"identity": "rider", "x0": 70, "y0": 5, "x1": 90, "y1": 80, "tags": []},
        {"identity": "person-group-far-away", "x0": 100, "y0": 5, "x1": 150, "y1": 20, "tags": []},
        {"identity": "person-group-far-away", "x0": 100, "y0": 30, "x1": 150, "y1": 40, "tags": ["depiction"]},
        {"identity": "bicycle", "x0": 160, "y0": 50, "x1": 190, "y1": 80, "tags": []},
        {"identity": "pedestrian", "x0": 190, "y0": 5, "x1": 230, "y1": 90, "tags": []},  # clipped to the 200-px image
    ]
    f = tmp_path / "labels" / "val" / "x" / "x_0.json"
    f.write_text(json.dumps({"identity": "frame", "imagewidth": 200, "imageheight": 100, "children": kids}))
    ds = load_ecp(tmp_path / "labels" / "val")
    got = [(a["ecp_identity"], a["ecp_ignore"], a["occlusion"], a["truncation"], a["iscrowd"]) for a in ds.coco.anns.values()]
    assert got == [("pedestrian", 0, 40, 10, 0), ("pedestrian", 1, 0, 0, 1), ("rider", 1, 0, 0, 1), ("person-group-far-away", 2, 0, 0, 1),
                   ("pedestrian", 0, 0, 0, 0)]
    assert ds.coco.anns[5]["bbox"] == [190.0, 5.0, 10.0, 85.0] and ds.lamr_protocol == "ecp"
    assert [a["category_id"] for a in load_ecp(tmp_path / "labels" / "val", classes=["pedestrian", "rider"]).coco.anns.values()][2] == 2
    kids[0]["x1"] = "wide"
    f.write_text(json.dumps({"identity": "frame", "children": kids}))
    with pytest.raises(DataError, match=r"x_0.json: id child #0: x0, y0, x1, y1: missing or not numbers"):
        load_ecp(tmp_path / "labels" / "val", strict=True)
    f.write_text(json.dumps({"identity": "seq", "children": []}))
    with pytest.raises(DataError, match=r"x_0.json: expected an ECP frame"):
        load_ecp(tmp_path / "labels" / "val")
    (tmp_path / "img" / "val" / "x" / "x_0.png").unlink()
    f.write_text(json.dumps({"identity": "frame", "children": kids[1:]}))
    with pytest.raises(DataError, match=r"x_0.json: id x/x_0: image file .*x_0.png is missing"):
        load_ecp(tmp_path / "labels" / "val", strict=True)


# ------------------------------------------------------------------------------ the training data pipeline
def _coco(tmp_path, images):
    d = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for i, (name, w, h) in enumerate(images, start=1):
        d["images"].append({"id": i, "file_name": name, "width": w, "height": h})
        d["annotations"].append({"id": i, "image_id": i, "category_id": 1, "bbox": [2, 3, 10, 12], "area": 120, "iscrowd": 0})
    p = tmp_path / "ann.json"
    p.write_text(json.dumps(d))
    return p


def test_exif_orientation_is_applied_and_checked_against_the_annotation(tmp_path):
    """A camera JPEG stored landscape with EXIF orientation 6 is portrait to the annotator; decoded upright, checked."""
    from PIL import Image

    from spnas.detect.data import decode_image_file, load_coco

    img = Image.new("RGB", (40, 20), (200, 30, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "cam.jpg", exif=exif)
    assert tuple(decode_image_file(tmp_path / "cam.jpg").shape) == (3, 40, 20)  # upright: 20 wide, 40 high
    ds = load_coco(_coco(tmp_path, [("cam.jpg", 20, 40)]), tmp_path)
    x, t = ds[0]
    assert tuple(x.shape) == (3, 40, 20) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    bad = load_coco(_coco(tmp_path, [("cam.jpg", 40, 20)]), tmp_path)  # annotated as stored, not as shown
    with pytest.raises(DataError, match=r"cam\.jpg: image 1 decodes to 20x40 \(EXIF orientation applied\), the annotation says 40x20"):
        bad[0]


def test_image_cache_is_bounded_and_starts_empty_in_a_worker():
    import pickle

    from spnas.detect.data import ImageCache

    c = ImageCache(max_bytes=3 * 300)
    for k in range(5):
        c.put(str(k), torch.zeros(300, dtype=torch.uint8))
    assert len(c) == 3 and c.bytes == 900 and c.get("0") is None and c.get("4") is not None  # least recently used go first
    c.get("2")
    c.put("5", torch.zeros(300, dtype=torch.uint8))
    assert c.get("2") is not None and c.get("3") is None
    c.put("big", torch.zeros(10_000, dtype=torch.uint8))  # larger than the budget: not kept
    assert c.get("big") is None and c.bytes <= c.max_bytes
    clone = pickle.loads(pickle.dumps(c))
    assert len(clone) == 0 and clone.max_bytes == 900


def test_training_is_the_same_with_any_number_of_loader_workers(tmp_path):
    """Flips are drawn by the sampler in the training process, so DataLoader workers change nothing but speed."""
    import dataclasses

    from spnas.detect import build_detector
    from spnas.detect.data import generate_shapes, load_coco
    from spnas.detect.train import FAST, train_detector
    from spnas.ir import parse

    ds = load_coco(generate_shapes(tmp_path, n_images=8, size=64, seed=0))
    losses = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = build_detector(parse("BB(1,d1,d1,d1)", seed=0), ds.num_classes, "faster", preset="lean", min_size=64, max_size=64)
        cfg = dataclasses.replace(FAST, epochs=2, batch_size=2, warmup_iters=1, max_iters_per_epoch=3, loader_workers=workers)
        losses.append(train_detector(model, ds, None, cfg, quiet=True).curve["loss"])
    assert len(losses[0]) == 6 and losses[0] == losses[1]


def test_flips_come_from_the_sampler_and_move_the_boxes():
    from spnas.detect.data import AugmentSampler

    keys = list(AugmentSampler(64, generator=torch.Generator().manual_seed(0)))
    assert sorted(i for i, _ in keys) == list(range(64)) and 16 < sum(f for _, f in keys) < 48
    assert keys == list(AugmentSampler(64, generator=torch.Generator().manual_seed(0)))
    assert not any(f for _, f in AugmentSampler(8, generator=torch.Generator(), flip=False))


def test_flip_mirrors_image_and_boxes_together(tmp_path):
    from spnas.detect.data import generate_shapes, load_coco

    ds = load_coco(generate_shapes(tmp_path, n_images=2, size=64, seed=1))
    (a, ta), (b, tb) = ds[(0, False)], ds[(0, True)]
    assert torch.equal(b, a.flip(-1))
    w = a.shape[-1]
    assert torch.allclose(tb["boxes"], torch.stack([w - ta["boxes"][:, 2], ta["boxes"][:, 1], w - ta["boxes"][:, 0], ta["boxes"][:, 3]], 1))


def test_multiscale_training_resizes_images_and_boxes_together():
    from spnas.detect import build_detector
    from spnas.ir import parse

    model = build_detector(parse("BB(1,d1,d1,d1)"), 2, "faster", preset="lean", min_size=100, max_size=100, train_scales=(0.8, 1.0, 1.2))
    box = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    seen = set()
    torch.manual_seed(0)
    model.train()
    for _ in range(30):
        images, targets = model.transform([torch.rand(3, 100, 100)], [{"boxes": box.clone(), "labels": torch.tensor([1])}])
        h, w = images.image_sizes[0]
        seen.add(h)
        assert h == w and torch.allclose(targets[0]["boxes"], box * h / 100, atol=1e-4)
    assert seen == {80, 100, 120}
    model.eval()
    images, _ = model.transform([torch.rand(3, 100, 100)])
    assert images.image_sizes[0] == (100, 100)  # one scale at test time


def test_16_bit_images_are_scaled_not_white(tmp_path):
    """A 16-bit grey PNG (and TIFF) decoded to near-white uint8 before; now its top 8 bits."""
    from PIL import Image

    from spnas.detect.data import decode_image_file

    a = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    for ext in ("png", "tif"):
        f = tmp_path / f"g16.{ext}"
        Image.fromarray(a).save(f)
        assert Image.open(f).mode.startswith("I;16")
        img = decode_image_file(f)
        assert img.dtype == torch.uint8 and img.shape == (3, 64, 64)
        assert torch.equal(img[0], torch.from_numpy((a >> 8).astype(np.uint8))) and torch.equal(img[0], img[2])


def test_an_image_over_the_pixel_cap_is_refused_from_its_header(tmp_path, monkeypatch):
    from PIL import Image

    from spnas.detect.data import decode_image_file
    from spnas.errors import DataError

    f = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(f)
    monkeypatch.setenv("SPNAS_MAX_IMAGE_PIXELS", "50000")
    with pytest.raises(DataError, match=r"big.png: 300 x 200 pixels is more than 50,000"):
        decode_image_file(f)
    monkeypatch.setenv("SPNAS_MAX_IMAGE_PIXELS", "60000")
    assert decode_image_file(f).shape == (3, 200, 300)


def _one_image_three_formats(tmp_path, boxes):
    """One 100x80 image annotated with the same boxes (corners x0, y0, x1, y1) as COCO json, VOC xml and an ECP frame."""
    from PIL import Image

    from spnas.detect.data import load_ecp

    (tmp_path / "img" / "c").mkdir(parents=True)
    Image.new("RGB", (100, 80), (90, 120, 60)).save(tmp_path / "img" / "c" / "c_0.png")
    coco = {"images": [{"id": 1, "file_name": "c/c_0.png", "width": 100, "height": 80}], "categories": [{"id": 1, "name": "pedestrian"}],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": 1.0, "iscrowd": 0}
                            for k, (x0, y0, x1, y1) in enumerate(boxes)]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    objs = "".join(f"<object><name>pedestrian</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
                   "</bndbox></object>" for x0, y0, x1, y1 in boxes)
    (tmp_path / "voc").mkdir()
    (tmp_path / "voc" / "c_0.xml").write_text(f"<annotation><filename>c_0.png</filename><size><width>100</width><height>80</height>"
                                              f"</size>{objs}</annotation>")
    frame = {"identity": "frame", "imagewidth": 100, "imageheight": 80,
             "children": [{"identity": "pedestrian", "x0": x0, "y0": y0, "x1": x1, "y1": y1, "tags": []} for x0, y0, x1, y1 in boxes]}
    (tmp_path / "labels" / "c").mkdir(parents=True)
    (tmp_path / "labels" / "c" / "c_0.json").write_text(json.dumps(frame))
    with pytest.warns(UserWarning):
        return (load_coco(tmp_path / "c.json", tmp_path / "img"), load_voc(tmp_path / "voc", tmp_path / "img" / "c"),
                load_ecp(tmp_path / "labels"))


def test_one_box_check_for_every_loader(tmp_path):
    """The three loaders share one check: the same bad box gets the same reason; a box crossing the
    border is kept as given (COCO, as pycocotools does), clipped (ECP, as its toolkit does) or,
    beyond VOC's 1-px border, refused."""
    crossing, inside, empty, off = (-20, 10, 30, 50), (10, 10, 40, 60), (50, 50, 50, 70), (120, 10, 150, 50)
    coco, voc, ecp = _one_image_three_formats(tmp_path, [crossing, inside, empty, off])
    kept = {name: sorted(tuple(a["bbox"]) for a in ds.coco.dataset["annotations"]) for name, ds in
            (("coco", coco), ("voc", voc), ("ecp", ecp))}
    assert kept["coco"] == [(-20, 10, 50, 40), (10, 10, 30, 50)]
    assert kept["ecp"] == [(0.0, 10.0, 30.0, 40.0), (10.0, 10.0, 30.0, 50.0)]
    assert kept["voc"] == [(10.0, 10.0, 30.0, 50.0)]
    for ds in (coco, voc, ecp):
        reasons = [p.reason for p in ds.problems]
        assert any(r.startswith("box ") and r.endswith("has zero or negative size") for r in reasons), reasons
        assert any(r.startswith("box ") and r.endswith("lies outside the 100x80 image") for r in reasons), reasons
    assert sum("lies outside" in p.reason for p in voc.problems) == 2  # the crossing box too


@pytest.mark.parametrize("text, says", [
    ("data:\n  format: coco\n  train: {json: a.json}\n  val: {json: b.json}\n  tile: 8\n", "d.yaml: line 5: data.tile: expected 0 (off)"),
    ("format: voc\ntrain: {xml: nowhere}\nval: {xml: nowhere}\n", "d.yaml: train.xml: no such file or directory"),
    ("data:\n  format: shapes\n  n_trian: 4\n", "d.yaml: line 3: data.n_trian: unknown key"),
    ("data: [1, 2]\n", "d.yaml: data: expected a mapping of data settings"),
])
def test_a_data_file_is_read_without_the_search(tmp_path, text, says):
    """``spnas train --data``: the data settings validated below the search package, one line naming the field."""
    from spnas.detect.datasets import read_data_file
    from spnas.errors import ConfigError

    (tmp_path / "d.yaml").write_text(text)
    with pytest.raises(ConfigError) as e:
        read_data_file(tmp_path / "d.yaml", tmp_path / "out")
    assert str(e.value).startswith(str(tmp_path / says.split(":")[0])) and says.split(": ", 1)[1] in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
