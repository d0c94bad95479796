"""Error branches that had no test, each asserting that its message names the key or the
input to fix, and the tools' untested options and failure paths, run as a user runs them
(subprocesses, tiny configs): tools/analyze_model.py's summary, tools/export_model.py's
failure exit and --num-samples / --opset, tools/visualize_data.py --dataset.
(The replica mismatch error and warning: tests/engine/test_replica_check.py.)"""
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, conv_multiply_adds, make_cfg

CONFIG = os.path.join(ROOT, "configs", "ssd_r34_shapes.yaml")


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- in-process error branches ------------------------------------------------------------------
def test_unknown_optimizer_names_the_key_and_the_choices():
    from ssd_r34.engine import SSDTrainer

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", "SOLVER.OPTIMIZER", "Adam")
    with pytest.raises(ValueError, match=r"SOLVER\.OPTIMIZER") as e:
        SSDTrainer.build_optimizer(cfg, torch.nn.Linear(2, 2))
    assert "'Adam'" in str(e.value) and "SGD" in str(e.value) and "AdamW" in str(e.value)


def test_box_ratios_for_fewer_levels_than_the_network_has_are_refused():
    """Five levels of ratios (and six sizes to go with them) for a six-level network."""
    from detectron2.modeling import build_model

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "MODEL.SSD.DEFAULT_BOX_RATIOS",
                   "[[2], [2, 3], [2, 3], [2, 3], [2]]", "MODEL.SSD.DEFAULT_BOX_SIZES",
                   "[21, 45, 99, 153, 207, 261]")
    with pytest.raises(ValueError, match=r"MODEL\.SSD\.DEFAULT_BOX_RATIOS") as e:
        build_model(cfg)
    assert "6" in str(e.value)


def test_box_sizes_not_one_more_than_the_ratio_levels_are_refused():
    from detectron2.modeling import build_model

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "MODEL.SSD.DEFAULT_BOX_SIZES",
                   "[21, 45, 99, 153, 207, 261]")
    with pytest.raises(ValueError, match=r"MODEL\.SSD\.DEFAULT_BOX_SIZES") as e:
        build_model(cfg)
    assert "6" in str(e.value)


@pytest.mark.parametrize("training", [False, True])
def test_images_of_different_sizes_in_one_batch_are_refused(training):
    from detectron2.modeling import build_model
    from detectron2.structures import Boxes, Instances

    model = build_model(make_cfg("configs/ssd_r34_shapes.yaml", *TINY)).train(training)
    batch = []
    for h, w in ((64, 64), (64, 80)):
        d = {"image": torch.zeros(3, h, w, dtype=torch.uint8)}
        if training:
            d["instances"] = Instances((h, w), gt_boxes=Boxes(torch.tensor([[1., 1., 30., 30.]])),
                                       gt_classes=torch.tensor([0]))
        batch.append(d)
    with pytest.raises(ValueError, match=r"one size") as e:
        model(batch)
    assert "(64, 64)" in str(e.value) and "(64, 80)" in str(e.value)
    assert "INPUT.FIXED_SIZE" in str(e.value)


# ---- the tools, as subprocesses ------------------------------------------------------------------
def run(tool, *args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def val_files(n):
    from detectron2.data import DatasetCatalog

    return [d["file_name"] for d in DatasetCatalog.get("shapes_val")[:n]]


def test_analyze_model_prints_the_counts_of_the_config():
    """The summary's figures against counts made here: parameters of the built model, its
    default boxes, and the convolutions' multiply-adds (output elements x in_channels x
    kh x kw over every convolution, from the shapes they produce)."""
    from detectron2.modeling import build_model

    rc, out, err = run("analyze_model.py", "--config-file", CONFIG, "--tasks", "parameter",
                       "flop", "--depth", "2", *TINY)
    assert rc == 0, err[-3000:]
    model = build_model(make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "MODEL.RESNETS.NORM",
                                 "BN", "MODEL.SSD.FUSE_BN_INFERENCE", "False")).eval()
    macs = conv_multiply_adds(model, (64, 64))
    head = re.search(r"ssd_r34_shapes\.yaml: input (\d+)x(\d+), strides ([\d ]+), (\d+) default "
                     r"boxes", out)
    assert head, out
    assert head.groups()[:3] == ("64", "64", "1 1 1 1 1 1")
    assert int(head.group(4)) == model.num_boxes() == 1616
    params = float(re.search(r"parameters: ([\d.]+) M", out).group(1))
    assert params == round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
    gflops = re.search(r"GFLOPs \(fvcore, 1 multiply-add = 1 flop\): ([\d.]+) \(convolutions "
                       r"([\d.]+), BatchNorm ([\d.]+)\); .*: ([\d.]+)", out)
    assert gflops, out
    conv = float(gflops.group(2))
    assert abs(conv - macs / 1e9) <= 0.005 + 1e-9
    assert float(gflops.group(4)) == pytest.approx(2 * conv, abs=0.051)
    assert "activations" not in out  # not asked for


def test_export_model_exits_1_when_the_export_differs_beyond_the_tolerance(tmp_path):
    """A negative --score-tol no difference can meet: the file is written, the table says
    DIFFERENT and the exit status is 1."""
    f = val_files(1)[0]
    rc, out, err = run("export_model.py", "--config-file", CONFIG, "--format", "torchscript",
                       "--output", tmp_path, "--sample-image", f, "--score-tol", "-1", *TINY)
    assert rc == 1, err[-3000:]
    assert "DIFFERENT" in out and "DOES NOT match" in out and "score -1.0" in out
    assert (tmp_path / "model.ts").exists()


def test_export_model_without_sample_images_or_test_set_says_what_to_give(tmp_path):
    out_dir = tmp_path / "export"
    rc, out, err = run("export_model.py", "--config-file", CONFIG, "--format", "torchscript",
                       "--output", out_dir, *TINY, "DATASETS.TEST", "()")
    assert rc == 1
    assert "Give --sample-image: the config has no DATASETS.TEST." in err
    assert not out_dir.exists() or not os.listdir(out_dir)  # nothing written


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random weights with the head scaled down: scores spread over (0, 1), so that the order
    of detections is well defined (an untrained head saturates the softmax: ties)."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(make_cfg("configs/ssd_r34_shapes.yaml", *TINY))
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(0.02)
    path = tmp_path_factory.mktemp("weights") / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_export_model_num_samples_and_opset(tmp_path, weights):
    """--num-samples 2: the first two images of DATASETS.TEST[0] (shapes_val), no more;
    --opset 16: the ONNX file's default-domain opset."""
    import onnx

    rc, out, err = run("export_model.py", "--config-file", CONFIG, "--format", "onnx",
                       "--output", tmp_path, "--num-samples", "2", "--opset", "16", *TINY,
                       "MODEL.WEIGHTS", weights)
    assert rc == 0, out[-3000:] + err[-3000:]
    first3 = [os.path.basename(f) for f in val_files(3)]
    assert first3[0] in out and first3[1] in out and first3[2] not in out
    assert "matches PyTorch on 2 image(s)" in out
    model = onnx.load(str(tmp_path / "model.onnx"))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {16}


def test_visualize_data_dataset_draws_that_data_set(tmp_path):
    """--dataset shapes_val instead of the config's DATASETS.TRAIN (shapes_train): each
    picture is shapes_val's image (with its boxes drawn on it), not shapes_train's image of
    the same file name."""
    import numpy as np
    from detectron2.data import DatasetCatalog
    from PIL import Image

    rc, out, err = run("visualize_data.py", "--config-file", CONFIG, "--source", "annotation",
                       "--dataset", "shapes_val", "--num-images", "2", "--output", tmp_path,
                       "--opts", *TINY)
    assert rc == 0, err[-3000:]
    val = DatasetCatalog.get("shapes_val")[:2]
    train = DatasetCatalog.get("shapes_train")[:2]
    expected = [os.path.splitext(os.path.basename(d["file_name"]))[0] + ".png" for d in val]
    assert sorted(os.listdir(tmp_path)) == sorted(expected)

    def pixels(path):
        return np.asarray(Image.open(path).convert("RGB")).astype(float)

    for name, v, t in zip(expected, val, train):
        drawn = pixels(tmp_path / name)
        assert drawn.shape == (v["height"], v["width"], 3)
        to_val = np.abs(drawn - pixels(v["file_name"])).mean()
        to_train = np.abs(drawn - pixels(t["file_name"])).mean() if \
            pixels(t["file_name"]).shape == drawn.shape else float("inf")
        assert to_val < 0.5 * to_train, (name, to_val, to_train)
