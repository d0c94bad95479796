"""Bad data, bad files, bad settings: each is refused (or dropped and reported) with a
message naming the culprit, and nothing is silently changed (docs/validation.md)."""
import contextlib
import copy
import errno
import io
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, TINY, make_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from ssd_r34.checkpoint import (CheckpointFormatError, CheckpointWriteError, SSDCheckpointer,
                                make_checkpointer_atomic)
from ssd_r34.checkpoint import atomic_io
from ssd_r34.data import SSDDatasetMapper, build_ssd_augmentations
from ssd_r34.data.transforms import check_input_config
from ssd_r34.data.loader import SeededMapDataset, load_train_dicts
from ssd_r34.data.validation import DatasetError, UnreadableImageError, box_problem
from ssd_r34.modeling.meta_arch import check_model_config

NO_AUG = ["INPUT.SSD.CROP", "False", "INPUT.RANDOM_FLIP", "none",
          "INPUT.SSD.COLOR_JITTER", "(0.0, 0.0, 0.0, 0.0)"]


def tiny_cfg(*opts):
    return make_cfg("configs/ssd_r34_shapes.yaml", *TINY, *opts)


@contextlib.contextmanager
def captured(name):
    """Records logged to logger ``name`` (whether or not it propagates to the root)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


# ---- settings ------------------------------------------------------------------------------
MODEL_CASES = [
    ("MODEL.SSD.NUM_CLASSES", "0"), ("MODEL.SSD.NUM_CLASSES", "-3"),
    ("MODEL.SSD.DEFAULT_BOX_RATIOS", "[[2], [2, 3]]"),
    ("MODEL.SSD.DEFAULT_BOX_RATIOS", "[[2], [2, 3], [2, 3], [2, 3], [2], [0]]"),
    ("MODEL.SSD.DEFAULT_BOX_SIZES", "[21, 45, 99]"),
    ("MODEL.SSD.DEFAULT_BOX_SIZES", "[21, 45, 99, 153, 207, 261, -315]"),
    ("MODEL.SSD.IOU_THRESHOLD", "1.5"), ("MODEL.SSD.NEG_POS_RATIO", "-1"),
    ("MODEL.SSD.BBOX_REG_WEIGHTS", "(0.0, 10.0, 5.0, 5.0)"),
    ("MODEL.SSD.BBOX_REG_WEIGHTS", "(10.0, 10.0, 5.0)"),
    ("MODEL.SSD.SCORE_THRESH_TEST", "1.0"), ("MODEL.SSD.TOPK_CANDIDATES_TEST", "0"),
    ("MODEL.SSD.NMS_THRESH_TEST", "0.0"), ("TEST.DETECTIONS_PER_IMAGE", "0"), ("MODEL.SSD.INFERENCE_DTYPE", "int4"),
    ("INPUT.FIXED_SIZE", "(0, 64)"), ("INPUT.FIXED_SIZE", "(64,)"),
]


@pytest.mark.parametrize("key,value", MODEL_CASES)
def test_a_model_setting_that_cannot_work_is_refused_naming_the_key(key, value):
    with pytest.raises(ValueError) as e:
        build_model(tiny_cfg(key, value))
    msg = str(e.value)
    assert msg.startswith(key) and "e.g. " + key in msg, msg


def test_default_boxes_of_zero_pixels_at_the_input_size_are_refused():
    cfg = tiny_cfg("MODEL.SSD.DEFAULT_BOX_SIZES", "[1, 45, 99, 153, 207, 261, 315]")
    with pytest.raises(ValueError, match=r"MODEL.SSD.DEFAULT_BOX_SIZES .*\[1\].*0 pixels"):
        build_model(cfg)


INPUT_CASES = [
    ("INPUT.SSD.COLOR_JITTER", "(0.1, 0.1, 0.1, 0.7)"),
    ("INPUT.SSD.COLOR_JITTER", "(-1.0, 0.0, 0.0, 0.0)"),
    ("INPUT.SSD.COLOR_JITTER", "(0.1, 0.1, 0.1)"),
    ("INPUT.FIXED_SIZE", "(64, -1)"), ("INPUT.RANDOM_FLIP", "vertical"),
]


@pytest.mark.parametrize("key,value", INPUT_CASES)
@pytest.mark.parametrize("is_train", [True, False])
def test_a_loader_setting_that_cannot_work_is_refused_naming_the_key(key, value, is_train):
    with pytest.raises(ValueError) as e:
        build_ssd_augmentations(tiny_cfg(key, value), is_train)
    assert str(e.value).startswith(key) and "e.g. " + key in str(e.value)


def test_every_shipped_config_passes_the_checks():
    root = os.path.join(ROOT, "configs")
    names = [f for f in sorted(os.listdir(root)) if f.endswith(".yaml")]
    assert names
    for f in names:
        cfg = make_cfg(os.path.join("configs", f))
        check_model_config(cfg)
        check_input_config(cfg)


# ---- data: a small registered data set ------------------------------------------------------
def _image(path, h=48, w=64, mode="RGB"):
    rng = np.random.default_rng(len(path))
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode).save(path)
    return path


def _ann(id_, bbox, cat=0, mode=BoxMode.XYWH_ABS, crowd=0):
    return {"id": id_, "bbox": bbox, "bbox_mode": mode, "category_id": cat, "iscrowd": crowd}


def _register(name, records, classes=("a", "b", "c")):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=list(classes))
    return name


def _records(tmp_path, annotations_per_image):
    out = []
    for i, annos in enumerate(annotations_per_image):
        path = _image(str(tmp_path / f"im{i}.png"))
        out.append({"file_name": path, "image_id": i, "height": 48, "width": 64,
                    "annotations": annos})
    return out


@pytest.mark.parametrize("bad_id", [3, -1, 7])
def test_a_class_id_outside_num_classes_stops_before_training(tmp_path, bad_id):
    recs = _records(tmp_path, [[_ann(11, [1, 1, 10, 10], 0)], [_ann(12, [5, 5, 9, 9], bad_id)]])
    name = _register(f"val_bad_id_{bad_id + 1}", recs)
    with pytest.raises(DatasetError) as e:
        load_train_dicts(tiny_cfg("DATASETS.TRAIN", f"('{name}',)"))
    msg = str(e.value)
    for part in (f"data set '{name}'", recs[1]["file_name"], "annotation id 12",
                 f"category_id {bad_id}", "MODEL.SSD.NUM_CLASSES 3"):
        assert part in msg, (part, msg)


def test_the_mapper_refuses_a_class_id_outside_num_classes_too(tmp_path):
    rec = _records(tmp_path, [[_ann(5, [1, 1, 10, 10], 3)]])[0]
    mapper = SSDDatasetMapper(tiny_cfg(*NO_AUG), is_train=True, dataset_name="mine")
    with pytest.raises(DatasetError, match=r"data set 'mine': .*im0.png, annotation id 5: "
                                           r"category_id 3 is outside \[0, 3\)"):
        mapper(rec)


def test_thing_classes_count_differing_from_num_classes_is_refused(tmp_path):
    recs = _records(tmp_path, [[_ann(1, [1, 1, 10, 10], 0)]])
    name = _register("val_four_classes", recs, classes=("a", "b", "c", "d"))
    with pytest.raises(DatasetError) as e:
        load_train_dicts(tiny_cfg("DATASETS.TRAIN", f"('{name}',)"))
    assert f"data set '{name}'" in str(e.value) and "4 classes" in str(e.value)
    assert "Set MODEL.SSD.NUM_CLASSES 4" in str(e.value)


BAD_BOXES = [  # (annotation id, bbox XYWH, reason)
    (21, [10, 10, -5, 8], "width <= 0"),
    (22, [10, 10, float("inf"), 8], "non-finite coordinates"),
    (23, [float("nan"), 10, 5, 8], "non-finite coordinates"),
    (24, [10, 10, 5, 0], "height <= 0"),
    (25, [70, 10, 5, 5], "entirely outside the image"),
    (26, [-20, 10, 10, 5], "entirely outside the image"),
]


@pytest.mark.parametrize("bbox,why", [(b, w) for _, b, w in BAD_BOXES])
def test_box_problem_names_the_reason(bbox, why):
    assert box_problem(bbox, BoxMode.XYWH_ABS, 64, 48) == why
    assert box_problem([1, 2, 3, 4], BoxMode.XYWH_ABS, 64, 48) is None


def test_invalid_boxes_are_dropped_not_repaired_and_reported_once(tmp_path):
    good = _ann(20, [2, 3, 30, 20], 1)
    bad = [_ann(i, b, 0) for i, b, _ in BAD_BOXES]
    recs = _records(tmp_path, [[good] + bad, bad[:2]])
    registered = copy.deepcopy(recs)
    name = _register("val_bad_boxes", recs)
    with captured("ssd_r34.data.validation") as logs:
        dicts, spans = load_train_dicts(tiny_cfg("DATASETS.TRAIN", f"('{name}',)"))
    # The image left without a box is not used (DATALOADER.FILTER_EMPTY_ANNOTATIONS True).
    assert spans == [(name, 1)] and len(dicts) == 1
    assert dicts[0]["annotations"] == [good]  # the valid box, unchanged
    assert recs == registered or all(  # the registered records are not modified
        np.array_equal(np.asarray(a["bbox"]), np.asarray(b["bbox"]), equal_nan=True)
        for r, q in zip(recs, registered) for a, b in zip(r["annotations"], q["annotations"]))
    warnings = [r.getMessage() for r in logs if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    w = warnings[0]
    assert f"Data set '{name}'" in w and "dropped 8 annotation(s)" in w
    for i in (21, 22, 23, 24, 25):  # the first five, by id, with the reason
        assert f"annotation id {i}" in w
    assert "width <= 0" in w and "1 image(s) left without a box" in w


def test_the_mapper_drops_invalid_boxes_and_keeps_the_valid_one_exactly(tmp_path):
    good = _ann(20, [2, 4, 30, 20], 2)
    rec = _records(tmp_path, [[_ann(i, b, 0) for i, b, _ in BAD_BOXES] + [good]])[0]
    mapper = SSDDatasetMapper(tiny_cfg(*NO_AUG), is_train=True)
    with captured("ssd_r34.data.mapper") as logs:
        out = mapper(rec)
    inst = out["instances"]
    assert inst.gt_classes.tolist() == [2]
    sx, sy = 64 / 64, 64 / 48  # resized to 64x64
    np.testing.assert_allclose(inst.gt_boxes.tensor[0].numpy(),
                               [2 * sx, 4 * sy, 32 * sx, 24 * sy], rtol=1e-5)
    assert sum("annotation id 2" in r.getMessage() for r in logs) == 5  # first five named
    # Only invalid boxes: no instance at all (None -> the loader draws another image).
    only_bad = dict(rec, annotations=[_ann(21, [10, 10, -5, 8], 0)])
    assert mapper(only_bad) is None


# ---- unreadable images ------------------------------------------------------------------
def _unreadable(tmp_path, kind):
    path = str(tmp_path / f"{kind}.jpg")
    if kind == "missing":
        return path
    if kind == "empty":
        open(path, "wb").close()
    elif kind == "text":
        with open(path, "w") as f:
            f.write("<html>404 Not Found</html>")
    elif kind == "truncated":
        buf = io.BytesIO()
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        with open(path, "wb") as f:
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    return path


KINDS = {"missing": "does not exist", "empty": "empty (0 bytes)", "text": "not an image",
         "truncated": "truncated"}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("is_train", [True, False])
def test_an_unreadable_image_is_named_with_its_data_set(tmp_path, kind, is_train):
    path = _unreadable(tmp_path, kind)
    rec = {"file_name": path, "image_id": 0, "height": 48, "width": 64,
           "annotations": [_ann(1, [1, 1, 10, 10])]}
    mapper = SSDDatasetMapper(tiny_cfg(*NO_AUG), is_train=is_train, dataset_name="mine")
    with pytest.raises(UnreadableImageError) as e:
        mapper(rec)
    msg = str(e.value)
    assert msg.startswith("data set 'mine': cannot read image " + path), msg
    assert KINDS[kind] in msg and "INPUT.SSD.SKIP_UNREADABLE_IMAGES" in msg


def test_the_training_loader_names_the_data_set_or_skips_when_asked(tmp_path):
    good = {"file_name": _image(str(tmp_path / "good.png")), "image_id": 1, "height": 48,
            "width": 64, "annotations": [_ann(1, [1, 1, 30, 30], 1)]}
    bad = {"file_name": _unreadable(tmp_path, "truncated"), "image_id": 2, "height": 48,
           "width": 64, "annotations": [_ann(2, [1, 1, 30, 30], 0)]}
    mapper = SSDDatasetMapper(tiny_cfg(*NO_AUG), is_train=True)
    spans = [("first", 1), ("second", 1)]
    strict = SeededMapDataset([good, bad], mapper, spans=spans)
    assert strict[(0, 0)]["file_name"] == good["file_name"]
    with pytest.raises(UnreadableImageError, match=r"^data set 'second': cannot read image .*"
                                                  r"truncated.jpg: the image is truncated"):
        strict[(0, 1)]
    skipping = SeededMapDataset([good, bad], mapper, spans=spans, skip_unreadable=True)
    with captured("ssd_r34.data.validation") as logs:
        out = [skipping[(seed, 1)] for seed in range(3)]
    assert all(o["file_name"] == good["file_name"] for o in out)  # another image drawn
    n = skipping._skipped.count  # >= 3: a redraw may pick the bad image again
    assert n >= 3 and skipping._skipped.files == [bad["file_name"]] * min(n, 5)
    assert "data set 'second'" in logs[0].getMessage() and bad["file_name"] in logs[0].getMessage()


def test_the_skip_key_reaches_the_trainers_loader(tmp_path):
    from ssd_r34.engine import SSDTrainer

    good = _records(tmp_path, [[_ann(1, [1, 1, 30, 30], 1)]])[0]
    bad = dict(good, file_name=_unreadable(tmp_path, "empty"), image_id=5)
    name = _register("val_skip", [bad, good])
    for skip in (False, True):
        cfg = tiny_cfg("DATASETS.TRAIN", f"('{name}',)", "DATALOADER.NUM_WORKERS", "0",
                       "SOLVER.IMS_PER_BATCH", "4", "INPUT.SSD.SKIP_UNREADABLE_IMAGES",
                       str(skip))
        loader = SSDTrainer.build_train_loader(cfg)
        if skip:
            batch = next(iter(loader))
            assert {x["file_name"] for x in batch} == {good["file_name"]}
        else:
            with pytest.raises(UnreadableImageError, match=f"data set '{name}'.*empty"):
                next(iter(loader))


# ---- odd but valid images ------------------------------------------------------------------
def _exif_rotated(path):
    """A 64 wide x 48 high picture stored as 48 x 64 with EXIF orientation 6 (rotate 90
    clockwise to display)."""
    shown = np.zeros((48, 64, 3), np.uint8)
    shown[:, :32] = 255  # left half white when displayed
    stored = Image.fromarray(np.rot90(shown, 1).copy())  # undone by orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif)
    return shown


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "LA", "EXIF"])
def test_odd_but_valid_images_keep_working(tmp_path, mode):
    ext = "jpg" if mode in ("CMYK", "EXIF") else "png"
    path = str(tmp_path / f"odd.{ext}")
    expected = None
    if mode == "I;16":
        a = np.zeros((48, 64), np.uint16)
        a[:, 32:] = 65535
        a[:24, :32] = 32896
        Image.fromarray(a).save(path)
        assert Image.open(path).mode == "I;16"
    elif mode == "EXIF":
        expected = _exif_rotated(path)
    else:
        _image(path, mode=mode)
    rec = {"file_name": path, "image_id": 0, "height": 48, "width": 64,
           "annotations": [_ann(1, [2, 2, 20, 20], 0)]}
    cfg = make_cfg("configs/ssd_r34_shapes.yaml", "INPUT.FIXED_SIZE", "(48, 64)", *NO_AUG)
    out = SSDDatasetMapper(cfg, is_train=True)(rec)
    img = out["image"]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 48, 64)
    assert len(out["instances"]) == 1
    if mode == "I;16":  # scaled to 8 bits, not clipped at 255
        assert img[:, 0, 40].tolist() == [255] * 3 and img[:, 0, 0].tolist() == [128] * 3
        assert img[:, 40, 0].tolist() == [0] * 3
    if mode == "EXIF":  # displayed orientation
        assert abs(img[0].float().mean().item() - 127.5) < 10
        assert img[:, :, :28].float().mean() > 240 and img[:, :, 36:].float().mean() < 15


# ---- weights files ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    return build_model(tiny_cfg())


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, snap):
    return all(torch.equal(v, snap[k]) for k, v in model.state_dict().items())


def _bad_file(tmp_path, kind, model):
    path = str(tmp_path / f"{kind}.pth")
    if kind == "random":
        data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    elif kind == "html":
        data = (b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
                b"<body>Not Found</body></html>\n")
    elif kind == "empty":
        data = b""
    elif kind in ("truncated_zip", "truncated_legacy"):
        buf = io.BytesIO()
        torch.save({"model": model.state_dict()}, buf,
                   _use_new_zipfile_serialization=kind == "truncated_zip")
        data = buf.getvalue()[: len(buf.getvalue()) // 3]
    with open(path, "wb") as f:
        f.write(data)
    return path


BAD_FILES = {"random": "bytes of unknown content", "html": "an HTML/XML page",
             "empty": "empty (0 bytes)", "truncated_zip": "zip archive",
             "truncated_legacy": "a pickle"}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_weights_file_that_is_not_a_checkpoint_is_named_with_what_it_holds(
        tmp_path, kind, tiny_model):
    path = _bad_file(tmp_path, kind, tiny_model)
    snap = _snapshot(tiny_model)
    with pytest.raises(CheckpointFormatError) as e:
        SSDCheckpointer(tiny_model).load(path)
    msg = str(e.value)
    assert msg.startswith(path + ": not a usable checkpoint") and BAD_FILES[kind] in msg, msg
    assert "\n" not in msg.strip() or kind == "html"
    assert _same(tiny_model, snap)


def test_a_checkpoint_of_another_architecture_is_refused_and_nothing_loads(tmp_path, tiny_model):
    import torchvision

    path = str(tmp_path / "resnet18.pth")
    torch.save({"model": torchvision.models.resnet18().state_dict()}, path)
    snap = _snapshot(tiny_model)
    with pytest.raises(CheckpointFormatError) as e:
        SSDCheckpointer(tiny_model).load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: not a checkpoint of this model: 0 of its ") and \
        "conv1.weight" in msg and "Nothing was loaded" in msg
    assert _same(tiny_model, snap)
    # Same names, mostly other shapes (e.g. another width): refused as well.
    sd = {k: torch.zeros(*v.shape, 2) for k, v in tiny_model.state_dict().items()}
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointFormatError, match="not a checkpoint of this model"):
        SSDCheckpointer(tiny_model).load(path)
    assert _same(tiny_model, snap)


def test_a_checkpoint_with_another_class_count_still_loads_its_backbone(tmp_path, tiny_model):
    other = build_model(tiny_cfg("MODEL.SSD.NUM_CLASSES", "5"))
    path = str(tmp_path / "five.pth")
    torch.save({"model": other.state_dict()}, path)
    SSDCheckpointer(tiny_model).load(path)  # the conf head does not fit; the rest does
    w = tiny_model.state_dict()["backbone.stem.conv1.weight"]
    assert torch.equal(w, other.state_dict()["backbone.stem.conv1.weight"])


# ---- a checkpoint write that fails -------------------------------------------------------------
def _fail_writes_after(monkeypatch, nbytes, err=errno.ENOSPC):
    real = atomic_io._AtomicFile.write
    written = {"n": 0}

    def write(self, data):
        written["n"] += len(data)
        if written["n"] > nbytes:
            self._record(OSError(err, os.strerror(err)))
            raise OSError(err, os.strerror(err))
        return real(self, data)

    monkeypatch.setattr(atomic_io._AtomicFile, "write", write)


def _fail_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(atomic_io.os, "fsync", fsync)


def _read_only(monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), args[0])
    monkeypatch.setattr(atomic_io, "open", refuse, raising=False)


@pytest.mark.parametrize("failure,cause", [
    ("write", "No space left on device"), ("fsync", "No space left on device"),
    ("read_only", "Permission denied")])
def test_a_failed_checkpoint_write_names_file_cause_and_the_last_good_one(
        tmp_path, monkeypatch, tiny_model, failure, cause):
    out = str(tmp_path / "out")
    os.makedirs(out)
    ckpt = make_checkpointer_atomic(SSDCheckpointer(tiny_model, out))
    ckpt.save("model_0000001", iteration=1)
    good = os.path.join(out, "model_0000001.pth")
    snap = _snapshot(tiny_model)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(1.0)  # the weights the failing save would have written
    {"write": lambda: _fail_writes_after(monkeypatch, 1000), "fsync": lambda: _fail_fsync(
        monkeypatch), "read_only": lambda: _read_only(monkeypatch)}[failure]()
    with pytest.raises(CheckpointWriteError) as e:
        ckpt.save("model_0000002", iteration=2)
    monkeypatch.undo()
    msg = str(e.value)
    bad = os.path.join(out, "model_0000002.pth")
    assert msg.startswith(f"could not write checkpoint {bad}: {cause}"), msg
    assert f"The last good checkpoint, {good}, is unchanged" in msg
    assert e.value.last_good == good and e.value.path == bad
    assert sorted(os.listdir(out)) == ["last_checkpoint", "model_0000001.pth"]  # no part left
    assert ckpt.get_checkpoint_file() == good
    fresh = build_model(tiny_cfg())
    extra = SSDCheckpointer(fresh, out).resume_or_load("", resume=True)
    assert extra["iteration"] == 1 and _same(fresh, snap)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.sub_(1.0)
