"""The MLPerf inference harness: MLPerf's pre-processing (INPUT.RESIZE_IMPL cv2-float) bit
for bit, accuracy records as MLPerf's accuracy-coco.py reads them scored like Detectron2's
COCOEvaluator, LoadGen runs (accuracy and performance), the ONNX export in MLPerf's I/O
convention, and the export check's comparison of tied detections."""
import argparse
import importlib
import json
import os

import numpy as np
import pytest
import torch

from conftest import CONFIG, NO_WINOGRAD, ROOT, TINY_NET, damped_head_weights, make_cfg

TINY = [*TINY_NET, "DATALOADER.NUM_WORKERS", "0", *NO_WINOGRAD]


def run_tool(name, argv):
    return importlib.import_module(f"ssd_r34.cli.{name}").main(argv)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """Random weights with the head scaled down (some boxes hit the shapes)."""
    return damped_head_weights(make_cfg(CONFIG, *TINY), tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def shapes_val():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    return DatasetCatalog.get("shapes_val"), MetadataCatalog.get("shapes_val")


# ---- pre-processing --------------------------------------------------------------------------
def mlperf_reference_preprocess(path, height, width):
    """MLPerf's steps, written from mlcommons/inference
    vision/classification_and_detection/python/dataset.py (maybe_resize,
    pre_process_coco_resnet34, need_transpose) and coco.py (cv2.imread)."""
    import cv2

    img = cv2.imread(path)
    img = np.array(img, dtype=np.float32)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    img = img / 255. - mean
    img = img / std
    return img.transpose([2, 0, 1])


def write_jpegs(folder, sizes=((480, 640), (427, 640), (640, 512))):
    """Real-sized JPEGs (COCO-like sizes): gradients, noise and rectangles, quality 90."""
    import cv2

    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=2)
        img = img + rng.normal(0, 12, img.shape)
        for _ in range(5):
            x0, y0 = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 50))
            img[y0:y0 + int(rng.integers(20, 200)), x0:x0 + int(rng.integers(20, 200))] = \
                rng.integers(0, 256, 3)
        path = os.path.join(folder, f"{i}.jpg")
        cv2.imwrite(path, np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append((path, h, w))
    return paths


@pytest.mark.parametrize("size", [(1200, 1200), (300, 300), (700, 500)])
def test_cv2_float_is_mlperfs_preprocessing_bit_for_bit(tmp_path, size):
    from ssd_r34.data import SSDDatasetMapper

    cfg = make_cfg("configs/Base-SSD-R34.yaml", "INPUT.FIXED_SIZE", str(size),
                   "INPUT.RESIZE_IMPL", "cv2-float")
    mapper = SSDDatasetMapper(cfg, is_train=False)
    for path, h, w in write_jpegs(str(tmp_path)):
        out = mapper({"file_name": path, "height": h, "width": w, "image_id": 1})
        ours = out["image"].numpy()
        ref = mlperf_reference_preprocess(path, *size)
        assert out["image_normalized"] is True
        assert ours.dtype == ref.dtype == np.float32 and ours.shape == (3, *size)
        assert float(np.abs(ours - ref).max()) == 0.0
        # the PIL path is a different pre-processing (the key matters)
        pil = SSDDatasetMapper(make_cfg("configs/Base-SSD-R34.yaml", "INPUT.FIXED_SIZE",
                                        str(size)), is_train=False)(
            {"file_name": path, "height": h, "width": w, "image_id": 1})["image"]
        assert pil.dtype == torch.uint8
        pil = ((pil.float() - torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1))
               / torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)).numpy()
        assert np.abs(pil - ref).max() > 1e-3


def test_cv2_float_image_reaches_the_network_unchanged_and_the_predictor_agrees(tmp_path):
    """The model does not normalise a normalised image again; SSDPredictor with cv2-float
    gives the mapper's input (from the cv2.imread array)."""
    import cv2

    from ssd_r34.data import SSDDatasetMapper
    from ssd_r34.engine import SSDPredictor

    cfg = make_cfg(CONFIG, *TINY, "INPUT.RESIZE_IMPL", "cv2-float")
    path, h, w = write_jpegs(str(tmp_path), sizes=((480, 640),))[0]
    x = SSDDatasetMapper(cfg, is_train=False)({"file_name": path, "height": h, "width": w})
    predictor = SSDPredictor(cfg)
    p = predictor.preprocess(cv2.imread(path))
    assert p["image_normalized"] and torch.equal(p["image"], x["image"])
    model = predictor.model
    assert torch.equal(model.preprocess_image([x]).tensor[0], x["image"])
    raw = {"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}
    assert torch.allclose(model.preprocess_image([raw]).tensor[0, :, 0, 0],
                          -model.pixel_mean.view(3) / model.pixel_std.view(3))
    with pytest.raises(ValueError, match="mixes normalised"):
        model.preprocess_image([x, raw])
    with pytest.raises(ValueError, match="INPUT.RESIZE_IMPL"):
        SSDDatasetMapper(make_cfg(CONFIG, "INPUT.RESIZE_IMPL", "cv2"), is_train=False)


# ---- accuracy records ------------------------------------------------------------------------
def oracle_detections(d, rng):
    """Jittered ground truth, a false positive and random scores: a detector with a
    meaningful AP (not 0, not 1) whose detections both scorers get."""
    from detectron2.structures import Boxes, BoxMode, Instances

    boxes, classes = [], []
    for a in d.get("annotations", []):
        b = np.array(BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS), float)
        boxes.append(b + rng.normal(0, 0.06 * (b[2] - b[0]), 4))
        classes.append(a["category_id"] if rng.random() > 0.1 else int(rng.integers(0, 3)))
    if rng.random() < 0.5:
        x, y = rng.uniform(0, 100, 2)
        boxes.append([x, y, x + 40, y + 40])
        classes.append(int(rng.integers(0, 3)))
    inst = Instances((d["height"], d["width"]))
    b = torch.tensor(np.array(boxes, float).reshape(-1, 4), dtype=torch.float32)
    inst.pred_boxes = Boxes(b)
    inst.pred_boxes.clip((d["height"], d["width"]))
    inst.scores = torch.tensor(rng.uniform(0.05, 1, len(b)), dtype=torch.float32)
    inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
    return inst


def coco_evaluator_ap(name, dicts, outputs):
    from ssd_r34.engine import SSDCOCOEvaluator

    ev = SSDCOCOEvaluator(name, tasks=("bbox",), distributed=False)
    ev.reset()
    ev.process([{"image_id": d["image_id"]} for d in dicts],
               [{"instances": o} for o in outputs])
    # on these images (the default is every image of the data set; MLPerf's script
    # evaluates the images it got answers for)
    return ev.evaluate(img_ids=[d["image_id"] for d in dicts])["bbox"]


def accuracy_log(image_list, dicts, outputs, label_map):
    """LoadGen-style accuracy log entries of the given detections."""
    from ssd_r34.engine.mlperf import encode_records

    pos = {i: k for k, i in enumerate(image_list)}
    log = []
    for d, o in zip(dicts, outputs):
        h, w = d["height"], d["width"]
        b = o.pred_boxes.tensor.double().numpy() / [w, h, w, h]
        data = encode_records(pos[d["image_id"]], b, o.scores.numpy(),
                              label_map[o.pred_classes.numpy()])
        log.append({"seq_id": len(log), "qsl_idx": pos[d["image_id"]], "data": data.hex().upper()})
    return log


@pytest.mark.parametrize("remove_empty", [False, True])
def test_accuracy_records_score_as_coco_evaluator(shapes_val, remove_empty):
    from ssd_r34.data import mlperf_image_ids
    from ssd_r34.engine.mlperf import label_map_for, load_coco, score_accuracy_log

    dicts, meta = shapes_val
    coco = load_coco(meta.json_file)
    image_list = mlperf_image_ids(coco, remove_empty)
    empty = {d["image_id"] for d in dicts if not d.get("annotations")}
    assert empty and (empty.isdisjoint(image_list) if remove_empty else
                      image_list == [im["id"] for im in coco.dataset["images"]])
    by_id = {d["image_id"]: d for d in dicts}
    chosen = [by_id[i] for i in image_list[:60]]
    rng = np.random.default_rng(1)
    outputs = [oracle_detections(d, rng) for d in chosen]
    outputs[3] = outputs[3][:0]  # an image without detections still answers
    ref = coco_evaluator_ap("shapes_val", chosen, outputs)

    log = accuracy_log(image_list, chosen, outputs, label_map_for(meta, coco))
    assert log[3]["data"] == ""
    dupe = dict(log[0], seq_id=len(log), data=log[1]["data"])  # a second answer is ignored
    r = score_accuracy_log(log + [dupe], coco, use_inv_map=True, remove_empty=remove_empty)
    assert 20 < 100 * r["mAP"] < 95  # a meaningful AP
    assert abs(100 * r["mAP"] - ref["AP"]) < 0.1
    assert abs(100 * r["stats"][1] - ref["AP50"]) < 0.1
    assert r["images"] == 60 and r["dupes"] == 1
    assert r["no_results"] == sum(len(o) == 0 for o in outputs) >= 1
    assert r["mismatched"] == 0
    # the script's list: a log made for one ordering, scored with the other, is wrong
    if remove_empty:
        wrong = score_accuracy_log(log, coco, use_inv_map=True, remove_empty=False)
        assert abs(wrong["mAP"] - r["mAP"]) > 0.01


def test_mlperf_dataset_order_and_lazy_registration(shapes_val, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ssd_r34.data import mlperf_image_ids, register_mlperf_coco
    from ssd_r34.engine.mlperf import load_coco

    _, meta = shapes_val
    name = register_mlperf_coco("shapes_val_mlperf_test", meta.json_file, meta.image_root,
                                {"thing_classes": list(meta.thing_classes)})
    ids = [d["image_id"] for d in DatasetCatalog.get(name)]
    assert ids == mlperf_image_ids(load_coco(meta.json_file), True)
    assert MetadataCatalog.get(name).mlperf_remove_empty_images is True
    # registered without files; reading names the missing file
    missing = register_mlperf_coco("missing_mlperf_test", str(tmp_path / "none.json"),
                                   str(tmp_path))
    with pytest.raises(FileNotFoundError, match="none.json"):
        DatasetCatalog.get(missing)
    assert "coco_2017_val_mlperf" in DatasetCatalog.list()
    assert MetadataCatalog.get("coco_2017_val_mlperf").mlperf_remove_empty_images is True


# ---- LoadGen ---------------------------------------------------------------------------------
@pytest.mark.parametrize("resize_impl", ["pil", "cv2-float"])
def test_loadgen_accuracy_run_scores_as_coco_evaluator(tmp_path, tiny_weights, shapes_val,
                                                       resize_impl):
    """tools/mlperf_inference.py (Offline, accuracy, batches of 3) on 12 images, then
    tools/mlperf_accuracy.py: the same AP as Detectron2's COCOEvaluator on the same model and
    pre-processing; every sample answered once."""
    from detectron2.data import build_detection_test_loader

    from ssd_r34.data import SSDDatasetMapper
    from ssd_r34.engine import SSDPredictor

    opts = [*TINY, "MODEL.WEIGHTS", tiny_weights, "INPUT.RESIZE_IMPL", resize_impl]
    out = tmp_path / "acc"
    r, ok = run_tool("mlperf_inference", [
        "--config-file", CONFIG, "--dataset", "shapes_val", "--scenario", "Offline",
        "--mode", "accuracy", "--output", str(out), "--count", "12", "--batch-size", "3", *opts])
    assert ok and r["issued"] == r["answered"] == 12 and not r["answered_twice"]
    for f in ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json"):
        assert (out / f).exists()
    log = json.load(open(out / "mlperf_log_accuracy.json"))
    assert sorted(e["qsl_idx"] for e in log) == list(range(12))

    dicts, meta = shapes_val
    acc = run_tool("mlperf_accuracy", ["--mlperf-accuracy-file",
                                       str(out / "mlperf_log_accuracy.json"),
                                       "--annotations", meta.json_file, "--use-inv-map"])
    cfg = make_cfg(CONFIG, *opts)
    model = SSDPredictor(cfg).model
    loader = build_detection_test_loader(dicts[:12], mapper=SSDDatasetMapper(cfg, is_train=False))
    inputs, outputs = [], []
    with torch.no_grad():
        for batch in loader:
            inputs += batch
            outputs += [o["instances"] for o in model(batch)]
    ref = coco_evaluator_ap("shapes_val", inputs, outputs)
    assert acc["images"] == 12
    for k, stat in (("AP", 0), ("AP50", 1), ("AP75", 2)):
        assert abs(100 * acc["stats"][stat] - ref[k]) < 0.1, (k, acc["stats"], ref)
    # record by record: the detections of the model, normalised, labels 1-based
    from ssd_r34.engine.mlperf import decode_records
    from ssd_r34.export import compare_detections

    assert [d["image_id"] for d in inputs] == [d["image_id"] for d in dicts[:12]]
    total = 0
    for e in log:
        rec = decode_records(bytes.fromhex(e["data"]))
        ref_inst, d = outputs[e["qsl_idx"]], inputs[e["qsl_idx"]]
        h, w = d["height"], d["width"]
        assert len(rec) == len(ref_inst) and np.all(rec[:, 0] == e["qsl_idx"])
        ref_boxes = ref_inst.pred_boxes.tensor.numpy()[:, [1, 0, 3, 2]] / [h, w, h, w]
        # as sets: the harness runs batches of 3, the loader batches of 1, so detections whose
        # scores differ by float rounding (1e-7) may come out in the other order
        got = (torch.from_numpy(rec[:, [2, 1, 4, 3]]), torch.from_numpy(rec[:, 5]),
               torch.from_numpy(rec[:, 6]).long() - 1)
        r = compare_detections((torch.from_numpy(ref_boxes[:, [1, 0, 3, 2]]),
                                ref_inst.scores, ref_inst.pred_classes), got)
        assert r["same_classes"] and r["max_box_diff"] <= 1e-6 and r["max_score_diff"] <= 1e-6, r
        total += len(rec)
    assert total > 0


class _ConstantBackend:
    """A registered test backend: a fixed detection after a short pause (the harness's
    scheduling, not a model, is under test)."""

    def __init__(self, cfg, args=None):
        pass

    def predict(self, inputs):
        import time

        time.sleep(0.001 * len(inputs))
        return [(np.array([[0.1, 0.2, 0.5, 0.6]]), np.array([0.9]), np.array([0]))
                for _ in inputs]


# MultiStream in `make test` (Offline: the accuracy runs above); all four in `make test-all`.
@pytest.mark.parametrize("scenario,extra", [
    pytest.param("SingleStream", ["--target-latency-ms", "1.5", "--min-query-count", "100"],
                 marks=pytest.mark.slow),
    pytest.param("Offline", ["--target-qps", "1000", "--batch-size", "8", "--min-query-count",
                             "1"], marks=pytest.mark.slow),
    pytest.param("Server", ["--target-qps", "50", "--target-latency-ms", "1000",
                            "--latency-percentile", "0.9", "--min-query-count", "150"],
                 marks=pytest.mark.slow),
    ("MultiStream", ["--samples-per-query", "2", "--latency-percentile", "0.9",
                     "--min-query-count", "100", "--target-latency-ms", "3"])])
def test_loadgen_performance_runs_are_valid_and_answer_every_sample_once(
        tmp_path, tiny_weights, scenario, extra):
    from ssd_r34.engine.mlperf import register_backend

    register_backend("test-constant", _ConstantBackend)
    r, ok = run_tool("mlperf_inference", [
        "--config-file", CONFIG, "--dataset", "shapes_val", "--scenario", scenario,
        "--mode", "performance", "--output", str(tmp_path), "--count", "16",
        "--backend", "test-constant", "--min-duration", "0.3", *extra, *TINY])
    text = open(tmp_path / "mlperf_log_summary.txt").read()
    assert "Result is : VALID" in text, text
    assert f"Scenario : {scenario}" in text
    assert ok and r["issued"] == r["answered"] > 0 and not r["answered_twice"]


def test_user_conf_and_overrides_reach_loadgen(tmp_path):
    from ssd_r34.engine.mlperf import build_settings

    conf = tmp_path / "user.conf"
    conf.write_text("ssd-resnet34.Server.target_qps = 7.5\n*.Server.min_duration = 1234\n")
    s = build_settings("Server", "performance", str(conf), {"min_query_count": 9})
    assert s.server_target_qps == 7.5 and s.min_duration_ms == 1234 and s.min_query_count == 9
    with pytest.raises(ValueError, match="scenario"):
        build_settings("Batch", "performance")


# ---- ONNX in MLPerf's convention -------------------------------------------------------------
def test_onnx_mlperf_io_export_and_backend_match_pytorch(tmp_path, tiny_weights, shapes_val):
    import onnx

    from ssd_r34.data import SSDDatasetMapper
    from ssd_r34.engine.mlperf import OnnxRuntimeBackend, PyTorchBackend

    opts = [*TINY, "MODEL.WEIGHTS", tiny_weights]
    res = run_tool("export_model", ["--config-file", CONFIG, "--format", "onnx", "--mlperf-io",
                                    "--output", str(tmp_path), "--num-samples", "2", *opts])
    assert res["ok"] and all(r["detections_ref"] > 0 for r in res["results"])
    graph = onnx.load(res["path"]).graph
    assert [i.name for i in graph.input] == ["image"]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    assert [o.name for o in graph.output] == ["bboxes", "labels", "scores"]

    cfg = make_cfg(CONFIG, *opts, "INPUT.RESIZE_IMPL", "cv2-float")
    mapper = SSDDatasetMapper(cfg, is_train=False)
    inputs = [mapper(d) for d in shapes_val[0][:3]]
    ours = PyTorchBackend(cfg).predict(inputs)
    ort = OnnxRuntimeBackend(cfg, argparse.Namespace(onnx_model=res["path"])).predict(inputs)
    for (b0, s0, c0), (b1, s1, c1) in zip(ours, ort):
        assert len(b0) == len(b1) > 0
        np.testing.assert_allclose(b1, b0, atol=1e-4)
        np.testing.assert_allclose(s1, s0, atol=1e-5)
        assert np.array_equal(c0, c1)
        assert np.all(np.diff(s1) <= 0) and b1.min() >= 0 and b1.max() <= 1


def test_compare_detections_pairs_ties_at_the_cut_as_sets():
    from ssd_r34.export import compare_detections

    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(8, 4, generator=g) * 500
    boxes[:, 2:] += boxes[:, :2]
    scores = torch.tensor([0.9, 0.8, 0.7, 0.5, 0.5, 0.5, 0.5, 0.5])
    classes = torch.tensor([0, 1, 0, 2, 2, 1, 0, 2])
    # ref keeps the first 6; the export cut the five-way 0.5 tie elsewhere
    ref = (boxes[:6], scores[:6], classes[:6])
    keep = torch.tensor([0, 1, 2, 7, 6, 3])
    out = (boxes[keep], scores[keep], classes[keep])
    r = compare_detections(ref, out, max_detections=6)
    assert r["same_classes"] and r["max_box_diff"] == 0 and r["tied_at_cut"] == 3
    assert not compare_detections(ref, out)["same_classes"] or \
        compare_detections(ref, out)["max_box_diff"] > 1  # without the cut: a difference
    # a real difference above the tie still fails
    moved = (out[0].clone(), out[1], out[2])
    moved[0][1] += 30
    assert compare_detections(ref, moved, max_detections=6)["max_box_diff"] >= 30
    # an all-tied list (a random model's saturated softmax) compares by number and score
    tied = (boxes[:6], torch.full((6,), 1.0), classes[:6])
    other = (boxes[2:8], torch.full((6,), 1.0), classes[2:8])
    assert compare_detections(tied, other, max_detections=6)["same_classes"]
    assert not compare_detections(tied, (boxes[:5], torch.full((5,), 1.0), classes[:5]),
                                  max_detections=6)["same_classes"]
