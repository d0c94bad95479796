"""The user's tools on the built-in shapes set: demo, visualize_data, plot_metrics and
export_model (TorchScript and ONNX against PyTorch), each checked for what it writes."""
import importlib
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CONFIG, SMALL, conv_multiply_adds, damped_head_weights, make_cfg


def run_tool(name, argv):
    """ssd_r34.cli.<name>.main(argv): tools/<name>.py's code, in this process."""
    return importlib.import_module(f"ssd_r34.cli.{name}").main(argv)


@pytest.fixture(scope="module")
def export_weights(tmp_path_factory):
    """Random weights with the head scaled down (conftest.damped_head_weights)."""
    return damped_head_weights(make_cfg(CONFIG, *SMALL), tmp_path_factory.mktemp("weights"))


def val_files(n):
    from detectron2.data import DatasetCatalog

    return [d["file_name"] for d in DatasetCatalog.get("shapes_val")[:n]]


# ---- demo ---------------------------------------------------------------------------------
def test_demo_writes_one_picture_and_json_per_image_and_skips_unreadable(
        tmp_path, short_run, capsys):
    from detectron2.data.detection_utils import read_image

    from ssd_r34.engine import SSDPredictor

    src = tmp_path / "in"
    src.mkdir()
    files = val_files(2)
    for f in files:
        shutil.copy(f, src)
    (src / "broken.jpg").write_bytes(b"this is not an image")
    weights = str(short_run / "model_final.pth")
    opts = [*SMALL, "MODEL.WEIGHTS", weights, "TEST.DETECTIONS_PER_IMAGE", "5"]
    out = tmp_path / "out"
    res = run_tool("demo", ["--config-file", CONFIG, "--input", str(src), "--output", str(out),
                            "--confidence-threshold", "0", "--scale", "2", "--opts", *opts])

    err = capsys.readouterr().err
    assert "skipping" in err and "broken.jpg" in err and "cannot read it as an image" in err
    assert res["skipped"] == [str(src / "broken.jpg")]
    names = sorted(os.listdir(out))
    assert names == ["00000.jpg", "00001.jpg", "detections.json"]
    for f in files:  # drawn at --scale 2, with boxes on it
        w, h = Image.open(f).size
        drawn = Image.open(out / os.path.basename(f))
        assert drawn.size == (2 * w, 2 * h)

    dets = json.load(open(out / "detections.json"))
    cfg = make_cfg(CONFIG, *opts)
    predictor = SSDPredictor(cfg, image_format="RGB")
    for image_id, f in enumerate(files, 1):
        mine = [d for d in dets if d["file_name"] == str(src / os.path.basename(f))]
        assert len(mine) == 5 and all(d["image_id"] == image_id for d in mine)
        inst = predictor(read_image(f, format="RGB"))["instances"]
        boxes = inst.pred_boxes.tensor.numpy()
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        np.testing.assert_allclose([d["bbox"] for d in mine], xywh, atol=1e-3)
        np.testing.assert_allclose([d["score"] for d in mine], inst.scores.numpy(), atol=1e-6)
        # shapes' COCO category ids are 1..3: contiguous id + 1
        assert [d["category_id"] for d in mine] == (inst.pred_classes + 1).tolist()
        names = ["circle", "square", "triangle"]
        assert [d["category_name"] for d in mine] == [names[c] for c in inst.pred_classes]


def test_demo_on_a_registered_dataset_with_threshold(tmp_path, short_run):
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import read_image

    from ssd_r34.engine import SSDPredictor

    opts = [*SMALL, "MODEL.WEIGHTS", str(short_run / "model_final.pth"),
            "TEST.DETECTIONS_PER_IMAGE", "10"]
    dicts = DatasetCatalog.get("shapes_val")[:2]
    predictor = SSDPredictor(make_cfg(CONFIG, *opts), image_format="RGB")
    scores = [predictor(read_image(d["file_name"], format="RGB"))["instances"].scores
              for d in dicts]
    threshold = float(torch.cat(scores).median())  # some detections drawn, some not
    expected = {d["file_name"]: int((s >= threshold).sum()) for d, s in zip(dicts, scores)}

    out = tmp_path / "out"
    res = run_tool("demo", ["--config-file", CONFIG, "--dataset", "shapes_val", "--num-images",
                            "2", "--output", str(out), "--confidence-threshold", str(threshold),
                            "--montage", str(tmp_path / "montage.png"), "--opts", *opts])
    assert sorted(os.listdir(out)) == ["00000.jpg", "00001.jpg", "detections.json"]
    assert len(res["written"]) == 2 and not res["skipped"]
    dets = json.load(open(out / "detections.json"))
    assert dets == res["detections"]
    assert {f: sum(d["file_name"] == f for d in dets) for f in expected} == expected
    assert all(d["score"] >= threshold - 5e-7 for d in dets)  # JSON scores: 6 decimals
    assert Image.open(tmp_path / "montage.png").size == (800, 420)  # 2 pictures in a row
    for d in dets:
        ref = next(r for r in dicts if r["file_name"] == d["file_name"])
        assert d["image_id"] == ref["image_id"]  # the data set's own image ids
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0
        assert x + w <= ref["width"] + 1e-3 and y + h <= ref["height"] + 1e-3


# ---- visualize_data -------------------------------------------------------------------------
def test_visualize_data_draws_annotations_and_augmented_training_images(tmp_path):
    from detectron2.data import DatasetCatalog

    dicts = DatasetCatalog.get("shapes_train")[:2]
    gt = run_tool("visualize_data", ["--config-file", CONFIG, "--source", "annotation",
                                     "--output", str(tmp_path / "gt"), "--num-images", "2"])
    assert [os.path.basename(p) for p in gt["written"]] == ["00000.png", "00001.png"]
    for d, path in zip(dicts, gt["written"]):
        drawn = np.asarray(Image.open(path).convert("RGB")).astype(int)
        original = np.asarray(Image.open(d["file_name"]).convert("RGB")).astype(int)
        assert drawn.shape == original.shape  # the original image, at scale 1
        # the box outline is drawn along the top edge of each ground-truth box
        for a in d["annotations"]:
            x, y, w, h = (int(round(v)) for v in a["bbox"])
            edge = (slice(max(y - 1, 0), y + 2), slice(x + 2, x + w - 2))
            assert np.abs(drawn[edge] - original[edge]).mean() > 10

    aug = run_tool("visualize_data", [
        "--config-file", CONFIG, "--source", "dataloader", "--output", str(tmp_path / "aug"),
        "--num-images", "2", "--scale", "2", "--crop-grid", str(tmp_path / "grid.png"),
        "--grid-size", "3", "--opts", "INPUT.FIXED_SIZE", "(96, 128)"])
    assert len(aug["written"]) == 2
    for path in aug["written"]:  # the mapper's output size (H 96, W 128) at scale 2
        assert Image.open(path).size == (256, 192)
    grid = Image.open(aug["crop_grid"])
    assert grid.size == (1200, 320)  # 4 tiles (original + 3) in one row, 3 x 3.2 inches each
    # deterministic in --seed
    again = run_tool("visualize_data", [
        "--config-file", CONFIG, "--source", "dataloader", "--output", str(tmp_path / "aug2"),
        "--num-images", "2", "--scale", "2", "--opts", "INPUT.FIXED_SIZE", "(96, 128)"])
    for a, b in zip(aug["written"], again["written"]):
        assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


# ---- plot_metrics ---------------------------------------------------------------------------
def test_plot_metrics_from_a_short_run(short_run):
    res = run_tool("plot_metrics", [str(short_run)])
    assert res["png"] == os.path.join(str(short_run), "metrics.png")
    assert Image.open(res["png"]).size == (1500, 420)
    series = res["series"]
    for key in ("total_loss", "loss_box_reg", "loss_cls", "lr"):
        assert series[key] and series[key][-1][0] == 2, key  # logged at the last iteration
    for key in ("bbox/AP", "bbox/AP50"):  # the evaluation after training
        assert series[key] and series[key][-1][0] >= 2, key
    assert math.isclose(series["total_loss"][-1][1],
                        series["loss_box_reg"][-1][1] + series["loss_cls"][-1][1], rel_tol=0.5)
    ap = series["bbox/AP"][-1][1]
    assert 0 <= ap <= 100 or math.isnan(ap)


def test_plot_metrics_keeps_the_last_value_of_a_resumed_iteration(tmp_path):
    rows = [{"iteration": 19, "total_loss": 3.0, "lr": 0.1}, {"iteration": 39, "total_loss": 2.0},
            {"iteration": 19, "total_loss": 2.5, "lr": 0.1}, {"iteration": 39, "bbox/AP": 12.0}]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = run_tool("plot_metrics", [str(tmp_path / "metrics.json"), "--output",
                                    str(tmp_path / "c.png")])
    assert res["series"]["total_loss"] == [(19, 2.5), (39, 2.0)]
    assert res["series"]["bbox/AP"] == [(39, 12.0)]
    assert Image.open(tmp_path / "c.png").size == (1500, 420)


# ---- export ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,input_type", [("torchscript", "uint8"), ("onnx", "uint8"),
                                            ("onnx", "normalized")])
def test_export_matches_pytorch(tmp_path, export_weights, fmt, input_type):
    from detectron2.data.detection_utils import read_image

    from ssd_r34.export import detections_to_instances, load_exported
    from ssd_r34.engine import SSDPredictor

    files = val_files(1 if input_type == "normalized" else 2)
    res = run_tool("export_model", [
        "--config-file", CONFIG, "--format", fmt, "--output", str(tmp_path),
        "--input-type", input_type, *sum((["--sample-image", f] for f in files), []),
        *SMALL, "MODEL.WEIGHTS", export_weights])
    assert res["ok"] and len(res["results"]) == len(files)
    for r in res["results"]:
        assert r["detections_ref"] == r["detections_export"] > 0
        assert r["same_classes"]
        assert r["max_box_diff"] < 1e-3
        assert r["max_score_diff"] < 1e-5
    assert os.path.basename(res["path"]) == {"torchscript": "model.ts", "onnx": "model.onnx"}[fmt]

    if fmt == "onnx":
        import onnx

        def op_types(g):  # including the subgraphs of If / Loop nodes
            for n in g.node:
                yield n.op_type
                for a in n.attribute:
                    if a.type == onnx.AttributeProto.GRAPH:
                        yield from op_types(a.g)

        graph = onnx.load(res["path"]).graph
        assert {"NonMaxSuppression", "TopK", "Softmax", "Conv"} <= set(op_types(graph))
        elem = graph.input[0].type.tensor_type
        assert [d.dim_value for d in elem.shape.dim] == [1, 3, 96, 96]
        assert elem.elem_type == (onnx.TensorProto.UINT8 if input_type == "uint8"
                                  else onnx.TensorProto.FLOAT)
        assert graph.output[0].type.tensor_type.shape.dim[0].dim_param  # dynamic count

    # end to end on the original image, as a user runs it: the same as SSDPredictor
    cfg = make_cfg(CONFIG, *SMALL, "MODEL.WEIGHTS", export_weights)
    predictor = SSDPredictor(cfg, image_format="RGB")
    runner = load_exported(fmt, res["path"])
    image = read_image(files[0], format="RGB")
    x = predictor.preprocess(image)["image"][None]
    if input_type == "normalized":
        m = predictor.model
        x = (x.float() - m.pixel_mean) / m.pixel_std
    boxes, scores, classes = runner(x)
    got = detections_to_instances(boxes, scores, classes, (96, 96), *image.shape[:2])
    ref = predictor(image)["instances"]
    assert len(got) == len(ref)
    torch.testing.assert_close(got.pred_boxes.tensor, ref.pred_boxes.tensor, atol=2e-3, rtol=0)
    torch.testing.assert_close(got.scores, ref.scores, atol=1e-5, rtol=0)
    assert torch.equal(got.pred_classes, ref.pred_classes)


def test_export_module_returns_the_models_detections(export_weights):
    """The traceable postprocessing gives SSD.inference's detections: same boxes, scores
    and classes as model.forward on a batch of one (clipped there, at 96 x 96)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from ssd_r34.export import SSDExportModule

    model = build_model(make_cfg(CONFIG, *SMALL)).eval()
    DetectionCheckpointer(model).load(export_weights)
    x = torch.randint(0, 256, (1, 3, 96, 96), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        boxes, scores, classes = SSDExportModule(model)(x)
        ref = model([{"image": x[0], "height": 96, "width": 96}])[0]["instances"]
    torch.testing.assert_close(boxes.clamp(0, 96), ref.pred_boxes.tensor)
    torch.testing.assert_close(scores, ref.scores)
    assert torch.equal(classes, ref.pred_classes)
    with pytest.raises(ValueError, match="eval mode"):
        from ssd_r34.export import export_torchscript

        export_torchscript(SSDExportModule(model.train()), x, "/nonexistent/model.ts")


# ---- analyze_model ---------------------------------------------------------------------------
def test_analyze_model_counts_match_an_independent_count():
    """Parameters: the MLPerf reference's 19.97 M and the model's own count; convolution multiply-adds
    (fvcore): the sum over every convolution of output elements x in_channels x kh x kw,
    computed here from the shapes the convolutions actually produce."""
    from detectron2.modeling import build_model

    from ssd_r34.modeling.analysis import analyze_model

    cfg = make_cfg("configs/ssd_r34_300.yaml")
    res = analyze_model(cfg, ["parameter", "flop"])
    # the hooks below must see the model's own convolutions, not a BN-folded copy
    model = build_model(make_cfg("configs/ssd_r34_300.yaml",
                                 "MODEL.SSD.FUSE_BN_INFERENCE", "False")).eval()
    assert res["boxes"] == 8732
    assert res["parameters"] == sum(p.numel() for p in model.parameters())
    assert round(res["parameters"] / 1e6, 2) == 19.97

    macs = conv_multiply_adds(model, (300, 300))
    assert res["gflops_by_operator"]["conv"] == pytest.approx(macs / 1e9, rel=1e-9)
