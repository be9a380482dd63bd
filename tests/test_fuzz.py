"""Fuzz: mutated configs, arch.yaml files, COCO and VOC annotation files end in success or one SpnasError line.

Each example takes a valid document, applies 1-3 random mutations (replace a value anywhere in the
tree with a hostile one, delete a key, add an unknown key) and reads it the way spnas does. Anything
but success or a one-line :class:`SpnasError` (a traceback: any other exception) fails the test. CI
runs a fixed set of examples (hypothesis derandomised); ``-m slow`` runs many more.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spnas.errors import SpnasError

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = [None, -1, 0, 1, 2**70, -(2**70), 1e308, float("nan"), float("inf"), "", "abc", "../../etc/passwd", "cuda:9",
           [], {}, [1, 2], {"a": 1}, True, False, 0.5, "BB(", "\x00", "é" * 300, [[[]]], "1e3"]


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw, base):
    doc = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _get(doc, path[:-1])
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(HOSTILE)))
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["bogus", "lamda", "epoch", "ir"]))] = copy.deepcopy(draw(st.sampled_from(HOSTILE)))
    return doc


def _one_line(e: SpnasError) -> None:
    text = str(e)
    assert "\n" not in text and len(text) < 2000, text[:300]


CONFIG = yaml.safe_load((ROOT / "tests" / "search" / "tiny.yaml").read_text())
N = 300


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(doc=mutated(CONFIG))
def test_fuzz_configs(doc, tmp_path):
    from spnas.search import load_config

    y = tmp_path / "fuzz.yaml"
    try:
        y.write_text(yaml.safe_dump(doc, allow_unicode=True))
    except (ValueError, yaml.YAMLError):
        return
    try:
        load_config(y)
    except SpnasError as e:
        _one_line(e)


@pytest.fixture(scope="module")
def saved_arch(tmp_path_factory):
    from spnas.ir import parse, save

    d = tmp_path_factory.mktemp("arch")
    save(parse("BB(1,d1,d1,d1)(0,1,0,0)"), d)
    return d



@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_arch_yaml(data, saved_arch, tmp_path_factory):
    from spnas.ir import load

    base = yaml.safe_load((saved_arch / "arch.yaml").read_text())
    doc = data.draw(mutated(base))
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except (ValueError, yaml.YAMLError):
        return
    d = tmp_path_factory.mktemp("fz")
    try:
        os.link(saved_arch / "weights.safetensors", d / "weights.safetensors")  # thousands of examples: no copies
        (d / "arch.yaml").write_text(text)
        load(d)
    except SpnasError as e:
        _one_line(e)
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    from spnas.detect.data import generate_shapes

    root = tmp_path_factory.mktemp("coco")
    return generate_shapes(root, n_images=3, size=64, seed=0, split="train")


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_coco_annotations(data, coco, tmp_path_factory):
    from spnas.detect.data import load_coco

    base = json.loads(Path(coco).read_text())
    base["annotations"] = base["annotations"][:4]
    doc = data.draw(mutated(base))
    d = tmp_path_factory.mktemp("ann")
    f = d / "ann.json"
    strict = data.draw(st.booleans())
    f.write_text(json.dumps(doc))  # NaN and Infinity are written as JSON's extensions, as many tools do
    _read_every_image(lambda: load_coco(str(f), str(Path(coco).parent), strict=strict), d)


def _read_every_image(load, d: Path) -> None:
    """Load a data set and decode each image: success or one SpnasError line; ``d`` is removed after."""
    try:
        ds = load()
        for i in range(len(ds)):
            ds[i]
    except SpnasError as e:
        _one_line(e)
    finally:
        shutil.rmtree(d)


VOC_DOC = {
    "filename": "a.png",
    "size": {"width": 64, "height": 64, "depth": 3},
    "object": [
        {"name": "tree", "difficult": 0, "bndbox": {"xmin": 1, "ymin": 2, "xmax": 20, "ymax": 30}},
        {"name": "bush", "difficult": 1, "bndbox": {"xmin": 30, "ymin": 30, "xmax": 40, "ymax": 41}},
    ],
}


def _xml(tag, v) -> str:
    from xml.sax.saxutils import escape

    if isinstance(v, list):
        return "".join(_xml(tag, x) for x in v)
    body = "".join(_xml(k, x) for k, x in v.items()) if isinstance(v, dict) else escape("" if v is None else str(v))
    return f"<{tag}>{body}</{tag}>"


@pytest.fixture(scope="module")
def voc_image(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("vocimg")
    Image.new("RGB", (64, 64), (90, 120, 60)).save(d / "a.png")
    return d


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_voc_annotations(data, voc_image, tmp_path_factory):
    """Mutated VOC trees, and their text cut short or with a byte changed (a torn or damaged file)."""
    from spnas.detect.data import load_voc

    text = "<annotation>" + _xml("x", data.draw(mutated(VOC_DOC)))[3:-4] + "</annotation>"
    cut = data.draw(st.sampled_from(["none", "none", "truncate", "byte"]))
    if cut == "truncate":
        text = text[: data.draw(st.integers(0, len(text)))]
    elif cut == "byte":
        i = data.draw(st.integers(0, len(text) - 1))
        text = text[:i] + data.draw(st.sampled_from(["<", ">", "&", "\x00", "é", "\n", "/"])) + text[i + 1:]
    d = tmp_path_factory.mktemp("voc")
    (d / "a.xml").write_text(text)
    os.link(voc_image / "a.png", d / "a.png")
    strict, classes = data.draw(st.booleans()), data.draw(st.sampled_from([None, ["tree"], ["tree", "bush"]]))
    _read_every_image(lambda: load_voc(d, strict=strict, classes=classes), d)


def test_a_voc_size_too_large_for_a_tensor_is_one_line(voc_image, tmp_path):
    """Found by CI: <size> of 2**70 px reached the box clipping and raised OverflowError; the size
    is checked against the file first, so it is one DataError line (non-strict reads the declared size)."""
    from spnas.detect.data import load_voc

    doc = {**VOC_DOC, "size": {"width": 64, "height": 2**70, "depth": 3}}
    d = tmp_path / "voc"
    d.mkdir()
    (d / "a.xml").write_text("<annotation>" + _xml("x", doc)[3:-4] + "</annotation>")
    os.link(voc_image / "a.png", d / "a.png")
    ds = load_voc(d, strict=False)
    with pytest.raises(SpnasError, match=r"a\.png.*decodes to 64x64.*the annotation says 64x1180591620717411303424"):
        ds[0]


SLOW = settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.mark.slow
@SLOW
@given(doc=mutated(CONFIG))
def test_fuzz_configs_long(doc, tmp_path):
    test_fuzz_configs.hypothesis.inner_test(doc, tmp_path)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_fuzz_arch_yaml_long(data, saved_arch, tmp_path_factory):
    test_fuzz_arch_yaml.hypothesis.inner_test(data, saved_arch, tmp_path_factory)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_fuzz_coco_annotations_long(data, coco, tmp_path_factory):
    test_fuzz_coco_annotations.hypothesis.inner_test(data, coco, tmp_path_factory)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_fuzz_voc_annotations_long(data, voc_image, tmp_path_factory):
    test_fuzz_voc_annotations.hypothesis.inner_test(data, voc_image, tmp_path_factory)


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory):
    from tests.use.test_untrusted_dir import make_detector_dir

    return make_detector_dir(tmp_path_factory.mktemp("det") / "det", [])


@settings(max_examples=N // 3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_detector_json(data, detector_dir, tmp_path_factory):
    """A mutated detector.json loads, or fails in one SpnasError line (it gave KeyError/TypeError tracebacks)."""
    import spnas

    base = json.loads((detector_dir / "detector.json").read_text())
    doc = data.draw(mutated(base))
    d = tmp_path_factory.mktemp("dj")
    try:
        shutil.copytree(detector_dir / "arch", d / "arch", copy_function=os.link)
        os.link(detector_dir / "detector.safetensors", d / "detector.safetensors")
        (d / "detector.json").write_text(json.dumps(doc))
        spnas.load_detector(d)
    except SpnasError as e:
        _one_line(e)
    finally:
        shutil.rmtree(d)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from tests.search.test_loop import run

    root = tmp_path_factory.mktemp("journal")
    run(root, search={"max_generations": 2})
    return root / "run"


@settings(max_examples=int(os.environ.get("FUZZ_JOURNAL_N", N // 10)), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_journal_lines(data, finished_run, tmp_path_factory):
    """A mutated journal line: the resume finishes, or stops in one SpnasError line (naming the damaged line)."""
    from spnas.search import Search
    from tests.search.fake import FakeEvaluator
    from tests.search.test_loop import config

    lines = (finished_run / "journal.jsonl").read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    lines[i] = json.dumps(data.draw(mutated(json.loads(lines[i]))))
    d = tmp_path_factory.mktemp("jr") / "run"
    shutil.copytree(finished_run, d, copy_function=os.link)
    (d / "journal.jsonl").unlink()
    (d / "journal.jsonl").write_text("\n".join(lines) + "\n")
    try:
        Search(config(search={"max_generations": 2}), d, evaluate=FakeEvaluator(), quiet=True, resume=True, tensorboard=False).run()
    except SpnasError as e:
        _one_line(e)
    finally:
        shutil.rmtree(d.parent)
