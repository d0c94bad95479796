"""The built-in ``shapes`` data set: deterministic, valid COCO, tight boxes, atomic, registered."""
import io
import json
import os
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest
from PIL import Image

from ssd_r34.data.datasets import shapes
from ssd_r34.data.datasets.shapes import (SHAPES_CLASSES, SHAPES_DIR, default_root, ensure_shapes,
                                 generate_shapes, register_shapes, shapes_split_sizes)


def _load(json_file):
    with open(json_file) as f:
        return json.load(f)


def _by_image(coco):
    per = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        per[a["image_id"]].append(a)
    return per


@pytest.fixture(scope="module")
def small_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_small")
    return root, generate_shapes(root, "val", 60, seed=1)


def test_api_constants(monkeypatch, tmp_path):
    assert SHAPES_CLASSES == ["circle", "square", "triangle"]
    assert shapes_split_sizes() == {"shapes_train": 1000, "shapes_val": 200}
    monkeypatch.setenv("SSD_R34_DATASETS", str(tmp_path))
    assert default_root() == str(tmp_path)
    monkeypatch.delenv("SSD_R34_DATASETS")
    assert default_root() == os.path.expanduser(os.path.join("~", ".cache", "ssd_r34"))


def test_deterministic_across_folders(tmp_path):
    a = generate_shapes(tmp_path / "a", "val", 12, seed=5)
    b = generate_shapes(tmp_path / "b", "val", 12, seed=5)
    assert a == str(tmp_path / "a" / SHAPES_DIR / "val.json")
    with open(a, "rb") as fa, open(b, "rb") as fb:
        assert fa.read() == fb.read()
    for name in ("00000.jpg", "00007.jpg"):
        pa = tmp_path / "a" / SHAPES_DIR / "val" / name
        pb = tmp_path / "b" / SHAPES_DIR / "val" / name
        assert pa.read_bytes() == pb.read_bytes()
        assert np.array_equal(np.asarray(Image.open(pa)), np.asarray(Image.open(pb)))
    other = generate_shapes(tmp_path / "c", "val", 12, seed=6)
    assert _load(other) != _load(a)


def test_coco_format_and_boxes(small_val):
    root, json_file = small_val
    coco = _load(json_file)
    assert coco["categories"] == [{"id": i + 1, "name": n, "supercategory": "shape"}
                                  for i, n in enumerate(SHAPES_CLASSES)]
    assert [im["id"] for im in coco["images"]] == list(range(1, 61))
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
    images = {im["id"]: im for im in coco["images"]}
    for im in coco["images"][:5]:
        with Image.open(os.path.join(root, SHAPES_DIR, "val", im["file_name"])) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert (img.width, img.height) == (im["width"], im["height"])
    assert len({(im["width"], im["height"]) for im in coco["images"]}) > 10  # sizes vary
    for im in coco["images"]:
        assert 160 <= im["width"] <= 256 and 160 <= im["height"] <= 256
    for a in coco["annotations"]:
        im = images[a["image_id"]]
        x, y, w, h = a["bbox"]
        assert all(isinstance(v, float) for v in a["bbox"])
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= im["width"] and y + h <= im["height"]
        assert a["area"] == pytest.approx(w * h) and a["iscrowd"] == 0
        assert a["category_id"] in (1, 2, 3)
        short = min(im["width"], im["height"])
        assert 0.1 * short <= max(w, h) <= 0.62 * short  # 12%..60% of the shorter side
        assert 0.55 <= w / h <= 1.75  # aspect ratio 0.6..1.6, give or take a pixel
    per = _by_image(coco)
    assert max(len(v) for v in per.values()) <= 2
    assert any(len(v) == 0 for v in per.values())  # val has images with no object
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 3}


def test_train_has_objects_in_every_image(tmp_path):
    coco = _load(generate_shapes(tmp_path, "train", 40, seed=0))
    per = _by_image(coco)
    assert all(1 <= len(v) <= 2 for v in per.values())
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 3}


def test_boxes_are_tight_around_the_drawn_shape():
    """Before JPEG: the pixels of the last-drawn (unoccluded) shape's colour fill its box and
    touch all four sides; after JPEG, pixels close to that colour stay inside it."""
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(40):
        img, annos = shapes._draw_image(rng, allow_empty=True)
        if not annos:
            continue
        arr = np.asarray(img).astype(np.int16)
        x, y, w, h = (int(v) for v in annos[-1]["bbox"])
        colour = arr[y + h // 2, x + w // 2]  # the box centre lies in every shape
        same = (arr == colour).all(-1)
        ys, xs = np.nonzero(same)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        inside = same[y:y + h, x:x + w].mean()
        assert {1: 0.7, 2: 0.95, 3: 0.45}[annos[-1]["category_id"]] <= inside
        # the shape contrasts with what is around it (a 4 px band outside the box)
        band = np.zeros_like(same)
        band[max(y - 4, 0):y + h + 4, max(x - 4, 0):x + w + 4] = True
        band[y:y + h, x:x + w] = False
        assert np.median(np.abs(arr[band] - colour).sum(-1)) >= 100
        # and the JPEG keeps near-colour pixels within a pixel or two of the box
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=95)
        jpg = np.asarray(Image.open(buf)).astype(np.int16)
        near = np.abs(jpg - colour).sum(-1) < 24
        near[max(y - 2, 0):y + h + 2, max(x - 2, 0):x + w + 2] = False
        assert near.sum() <= 3
        checked += 1
    assert checked >= 30


def test_second_call_does_nothing(tmp_path):
    json_file = generate_shapes(tmp_path, "val", 5, seed=1)
    image = tmp_path / SHAPES_DIR / "val" / "00000.jpg"
    before = (os.stat(json_file).st_mtime_ns, os.stat(image).st_mtime_ns)
    assert generate_shapes(tmp_path, "val", 5, seed=1) == json_file
    assert (os.stat(json_file).st_mtime_ns, os.stat(image).st_mtime_ns) == before
    assert sorted(os.listdir(tmp_path / SHAPES_DIR)) == ["val", "val.json"]  # no temporaries


def test_failed_generation_leaves_no_json(tmp_path, monkeypatch):
    calls = []
    real_save = Image.Image.save

    def failing_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError):
        generate_shapes(tmp_path, "val", 5, seed=1)
    assert os.listdir(tmp_path / SHAPES_DIR) == []
    monkeypatch.undo()
    json_file = generate_shapes(tmp_path, "val", 5, seed=1)
    assert len(_load(json_file)["images"]) == 5


def _generate(root):
    return generate_shapes(root, "val", 20, seed=1)


def test_concurrent_generation(tmp_path):
    with ProcessPoolExecutor(3, mp_context=get_context("fork")) as ex:
        results = list(ex.map(_generate, [str(tmp_path / "shared")] * 3))
    assert len(set(results)) == 1
    assert sorted(os.listdir(tmp_path / "shared" / SHAPES_DIR)) == ["val", "val.json"]
    alone = generate_shapes(tmp_path / "alone", "val", 20, seed=1)
    assert _load(results[0]) == _load(alone)
    assert sorted(os.listdir(tmp_path / "shared" / SHAPES_DIR / "val")) == [
        f"{i:05d}.jpg" for i in range(20)]


def test_builtin_names_are_registered():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in ("shapes_train", "shapes_val"):
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == SHAPES_CLASSES and meta.evaluator_type == "coco"
        assert meta.json_file.endswith(os.path.join(SHAPES_DIR, name[len("shapes_"):] + ".json"))
    assert ensure_shapes("coco_2017_val") is None


def test_registered_val_loads_into_detectron2_dicts(tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    monkeypatch.setenv("SSD_R34_DATASETS", str(tmp_path))
    prefix = f"shapes_test_{uuid.uuid4().hex[:8]}"
    names = register_shapes(prefix=prefix)  # root: the env var, resolved now
    assert names == [f"{prefix}_train", f"{prefix}_val"]
    assert register_shapes(prefix=prefix) == names  # twice is harmless
    assert not (tmp_path / SHAPES_DIR).exists()  # registering generates nothing
    val = f"{prefix}_val"
    meta = MetadataCatalog.get(val)
    assert meta.json_file == str(tmp_path / SHAPES_DIR / "val.json")
    assert meta.image_root == str(tmp_path / SHAPES_DIR / "val")

    dicts = DatasetCatalog.get(val)
    assert os.path.exists(meta.json_file)
    assert not (tmp_path / SHAPES_DIR / "train.json").exists()  # only what was asked for
    assert len(dicts) == 200
    assert sum(not d["annotations"] for d in dicts) >= 5  # some images with no object
    assert os.path.isfile(dicts[0]["file_name"])
    cats = set()
    for d in dicts:
        assert 160 <= d["width"] <= 256 and 160 <= d["height"] <= 256
        for a in d["annotations"]:
            assert a["bbox_mode"] == BoxMode.XYWH_ABS
            cats.add(a["category_id"])
    assert cats == {0, 1, 2}
    assert ensure_shapes(val) == meta.json_file  # already there: no-op
