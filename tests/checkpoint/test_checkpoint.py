"""Reading MLPerf / torchvision checkpoints: layouts, conversion, refusals (fast cases).
The detection and loss equivalence with the reference is in test_equivalence.py."""
import collections
import os
import pickle

import pytest
import torch
import torchvision

import reference_impl as ref
from conftest import make_cfg
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from ssd_r34.checkpoint import (CheckpointFormatError, SSDCheckpointer, UnsafeCheckpointError,
                                convert_mlperf_state_dict, find_mlperf_checkpoint,
                                load_checkpoint_file, read_mlperf_checkpoint,
                                reference_key_shapes)
from ssd_r34.modeling.meta_arch import flatten_predictions

from ssd_r34.cli import convert_mlperf_to_d2, convert_torchvision_resnet34


@pytest.fixture(scope="module")
def model300():
    return build_model(make_cfg("configs/ssd_r34_300.yaml"))


@pytest.fixture(scope="module")
def reference_sd():
    torch.manual_seed(0)
    r = ref.ReferenceSSDR34(81)
    for m in r.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(7)
    return r.state_dict()


def save_layouts(sd, folder):
    """The four file shapes of spec section 2 (and the legacy non-zip serialisation)."""
    prefixed = collections.OrderedDict(("module." + k, v) for k, v in sd.items())
    files = {
        "bare": sd,
        "model_label_map": {"model": sd, "label_map": {i: i for i in range(1, 81)}},
        "module_bare": prefixed,
        "module_model_label_map": {"model": prefixed, "label_map": {1: 1}, "epoch": 3},
    }
    paths = {}
    for name, obj in files.items():
        paths[name] = str(folder / f"{name}.pt")
        torch.save(obj, paths[name])
    paths["legacy_bare"] = str(folder / "legacy_bare.pt")
    torch.save(sd, paths["legacy_bare"], _use_new_zipfile_serialization=False)
    return paths


def test_reference_key_template_is_the_reference_state_dict(reference_sd):
    keys = [k for k in reference_sd if not k.endswith("num_batches_tracked")]
    shapes = reference_key_shapes(81)
    assert keys == list(shapes)
    assert all(tuple(reference_sd[k].shape) == shapes[k] for k in keys)


def test_every_layout_converts_to_the_same_d2_state_dict(reference_sd, tmp_path):
    paths = save_layouts(reference_sd, tmp_path)
    converted = {}
    for name, path in paths.items():
        ckpt = read_mlperf_checkpoint(path, num_classes=80)
        assert ckpt.num_classes == 81
        assert ("module." in ckpt.layout) == name.startswith("module")
        assert ("'model' state dict" in ckpt.layout) == name.endswith("label_map")
        converted[name] = convert_mlperf_state_dict(ckpt)
    first = converted["bare"]
    for name, sd in converted.items():
        assert list(sd) == list(first), name
        assert all(torch.equal(sd[k], first[k]) for k in sd), name
    assert "label_map" in read_mlperf_checkpoint(paths["model_label_map"]).extra


@pytest.mark.parametrize("norm", ["BN", "FrozenBN", "naiveSyncBN"])
def test_converted_weights_load_with_nothing_missing_or_unexpected(reference_sd, tmp_path, norm):
    path = str(tmp_path / "iter_100.pt")
    torch.save({"model": collections.OrderedDict(("module." + k, v) for k, v in reference_sd.items()),
                "label_map": {}}, path)
    out = str(tmp_path / "converted.pth")
    assert convert_mlperf_to_d2.main([path, out]) == 0
    model = build_model(make_cfg("configs/ssd_r34_300.yaml", "MODEL.RESNETS.NORM", norm))
    for checkpointer, f in ((DetectionCheckpointer(model), out), (SSDCheckpointer(model), path)):
        seen = []
        checkpointer._log_incompatible_keys = seen.append
        checkpointer.load(f)
        (incompatible,) = seen
        assert not incompatible.missing_keys, incompatible.missing_keys
        assert not incompatible.unexpected_keys, incompatible.unexpected_keys
        assert not incompatible.incorrect_shapes
    sd = model.state_dict()
    torch.testing.assert_close(sd["backbone.res4.0.shortcut.norm.running_var"],
                               reference_sd["model.layer2.0.0.downsample.1.running_var"])
    torch.testing.assert_close(sd["backbone.extra3.conv2.bias"],
                               reference_sd["additional_blocks.3.2.bias"])


def test_head_channel_permutation_matches_the_reference_reading(reference_sd):
    """Per level, the reference reads loc as (N, 4, nd*h*w) and conf as (N, 81, nd*h*w)
    (class 0 background); ssd_r34 flattens anchor-major with background last."""
    ckpt = find_mlperf_checkpoint(reference_sd)
    sd = convert_mlperf_state_dict(ckpt)
    for level, (nd, c) in enumerate(zip(ref.NUM_DEFAULTS, ref.OUT_CHANNELS)):
        x = torch.randn(1, c, 3, 4)
        conv = lambda p: torch.nn.functional.conv2d(x, p[0], p[1], padding=1)  # noqa: E731
        ours_loc = flatten_predictions([conv([sd[f"head.loc.{level}.{t}"] for t in ("weight", "bias")])], 4)
        ours_conf = flatten_predictions([conv([sd[f"head.conf.{level}.{t}"] for t in ("weight", "bias")])], 81)
        ref_loc = conv([reference_sd[f"loc.{level}.{t}"] for t in ("weight", "bias")]).view(1, 4, -1)
        ref_conf = conv([reference_sd[f"conf.{level}.{t}"] for t in ("weight", "bias")]).view(1, 81, -1)
        torch.testing.assert_close(ours_loc[0], ref_loc[0].t())
        torch.testing.assert_close(ours_conf[0, :, :80], ref_conf[0, 1:].t())  # classes 1..80
        torch.testing.assert_close(ours_conf[0, :, 80], ref_conf[0, 0])  # background


def test_wrong_class_count_fails_naming_the_keys(tmp_path, capsys, model300):
    torch.manual_seed(0)
    path = str(tmp_path / "coco91.pt")
    torch.save(ref.ReferenceSSDR34(92).state_dict(), path)
    with pytest.raises(CheckpointFormatError, match=r"conf\.0\.weight \(368, 256, 3, 3\).*"
                                                     r"NUM_CLASSES = 80.*NUM_CLASSES 91"):
        read_mlperf_checkpoint(path, num_classes=80)
    model = model300
    with pytest.raises(CheckpointFormatError, match=r"conf\.0\.weight.*MODEL\.SSD\.NUM_CLASSES"):
        SSDCheckpointer(model).load(path)
    assert convert_mlperf_to_d2.main([path, str(tmp_path / "o.pth")]) == 1
    assert "conf.0.weight" in capsys.readouterr().err
    assert not (tmp_path / "o.pth").exists()
    # any count is accepted on request, and reported
    assert convert_mlperf_to_d2.main([path, str(tmp_path / "o.pth"), "--num-classes", "-1"]) == 0
    assert "92 classes (91 + background)" in capsys.readouterr().out


def test_files_that_are_not_mlperf_fail_naming_the_first_keys(reference_sd, tmp_path, capsys, model300):
    model = model300
    d2 = str(tmp_path / "d2.pth")
    torch.save({"model": model.state_dict()}, d2)
    tv = str(tmp_path / "resnet18.pth")
    torch.save(torchvision.models.resnet18().state_dict(), tv)
    for path, first in ((d2, "backbone.stem.conv1.weight"), (tv, "conv1.weight, bn1.weight")):
        with pytest.raises(CheckpointFormatError, match="not an MLPerf SSD-ResNet34 checkpoint"):
            read_mlperf_checkpoint(path)
        assert convert_mlperf_to_d2.main([path, str(tmp_path / "o.pth")]) == 1
        err = capsys.readouterr().err
        assert "its first keys are: " + first in err, err
    # an SSD-R34 file with a key missing, an extra one and a wrong shape
    broken = dict(reference_sd)
    del broken["additional_blocks.3.2.bias"]
    broken["foo.weight"] = torch.zeros(1)
    broken["loc.5.bias"] = torch.zeros(15)
    path = str(tmp_path / "broken.pt")
    torch.save(broken, path)
    with pytest.raises(CheckpointFormatError) as e:
        read_mlperf_checkpoint(path)
    msg = str(e.value)
    assert "missing keys: additional_blocks.3.2.bias" in msg
    assert "unexpected keys: foo.weight" in msg
    assert "wrong shapes: loc.5.bias (15,) (expected (16,))" in msg
    # Detectron2 checkpoints still load through SSDCheckpointer as usual
    incompatible = SSDCheckpointer(model).load(d2)
    assert incompatible == {}


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


def test_payload_really_runs_under_plain_pickle(tmp_path):
    # sanity check of the payload used below (runs our own harmless "touch")
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_System(marker)))
    assert marker.exists()


@pytest.mark.parametrize("kind", ["zip", "legacy", "raw_pickle", "eval", "inside_module"])
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, kind, capsys, model300):
    marker = tmp_path / "pwned"
    payload = _Eval(marker) if kind == "eval" else _System(marker)
    path = str(tmp_path / "evil.pth")
    if kind == "raw_pickle":
        with open(path, "wb") as f:
            pickle.dump({"model": payload}, f, protocol=2)
    elif kind == "inside_module":
        # a whole-module pickle (placeholder classes) whose state hides the payload
        m = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1))
        m[0].__dict__["hook"] = payload
        torch.save(m, path)
    else:
        torch.save({"model": {"conv.weight": torch.zeros(1), "x": payload}}, path,
                   _use_new_zipfile_serialization=(kind != "legacy"))
    name = "builtins.eval" if kind == "eval" else f"{os.name}.system"
    with pytest.raises(UnsafeCheckpointError, match=f"refusing to unpickle the global '{name}'"):
        load_checkpoint_file(path)
    model = model300
    with pytest.raises(UnsafeCheckpointError, match="Nothing was executed"):
        SSDCheckpointer(model).load(path)
    assert convert_mlperf_to_d2.main([path, str(tmp_path / "o.pth")]) == 1
    assert "arbitrary" in capsys.readouterr().err
    assert not marker.exists()


def test_torchvision_resnet34_becomes_the_backbone(tmp_path, capsys, model300):
    torch.manual_seed(0)
    tv = torchvision.models.resnet34()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    tv.eval()
    src, out = str(tmp_path / "resnet34.pth"), str(tmp_path / "resnet34_d2.pth")
    torch.save(tv.state_dict(), src)
    assert convert_torchvision_resnet34.main([src, out]) == 0
    assert "dropped layer4, fc" in capsys.readouterr().out
    model = model300.eval()
    incompatible = DetectionCheckpointer(model)._load_model(torch.load(out, weights_only=True))
    assert not incompatible.unexpected_keys and not incompatible.incorrect_shapes
    assert {k.split(".")[1] for k in incompatible.missing_keys} == {
        "extra0", "extra1", "extra2", "extra3", "extra4", "loc", "conf"}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))
        b = model.backbone
        got = b.res3(b.res2(b.stem(x)))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.backbone.res4[5].conv2.weight, tv.layer3[5].conv2.weight)
    # MODEL.WEIGHTS at the torchvision file itself works too
    with torch.no_grad():
        model.backbone.res4[0].shortcut.norm.running_mean.zero_()
    SSDCheckpointer(model).load(src)
    torch.testing.assert_close(model.backbone.res4[0].shortcut.norm.running_mean,
                               tv.layer3[0].downsample[1].running_mean)
    bad = str(tmp_path / "resnet50.pth")
    torch.save(torchvision.models.resnet50().state_dict(), bad)
    assert convert_torchvision_resnet34.main([bad, out]) == 1
    assert "not a torchvision ResNet-34" in capsys.readouterr().err
