"""Untrusted weights files never run code and never take the process down: thousands of
mutated and truncated checkpoint files (zip archives, legacy pickles, pickled module trees,
pickles carrying code) through the reader and the converters, and damaged state dicts through
the MLPerf converter. Inference on NaN / inf network outputs ends, without NaN boxes.

SSD_R34_FUZZ_CASES sets the number of file cases of the slow run (default 400; e.g. 5000 for a
longer run; the fast run has 100)."""
import collections
import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY, make_cfg
from ssd_r34.checkpoint import (CheckpointFormatError, convert_mlperf_state_dict,
                                find_mlperf_checkpoint, reference_key_shapes)

CASES = int(os.environ.get("SSD_R34_FUZZ_CASES", "400"))


# 100 file cases in `make test`, CASES in `make test-all`
@pytest.mark.parametrize("cases", [100, pytest.param(CASES, marks=pytest.mark.slow)])
def test_mutated_checkpoint_files_end_in_a_clear_error_or_a_load(tmp_path, cases):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "checkpoint", "fuzz_checkpoints.py"),
                           str(cases), "0", str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=60 + cases)
    assert proc.returncode == 0, f"the reader crashed the process: {proc.stderr[-2000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(report)
    assert not report["executed"], "a payload ran"
    assert report["odd"] == [], report["odd"]
    outcomes = report["outcomes"]
    assert sum(v for k, v in outcomes.items() if "converter" not in k) == cases
    # Every kind of outcome occurs: the fuzz reaches the loads, the refusals and the errors.
    assert outcomes["loaded"] >= 5 and outcomes["UnsafeCheckpointError"] >= 4
    assert outcomes["CheckpointFormatError"] > cases // 4


@pytest.fixture(scope="module")
def reference_sd():
    torch.manual_seed(0)
    return collections.OrderedDict((k, torch.randn(s)) for k, s in
                                   reference_key_shapes(4).items())


def _damage(sd, rng):
    sd = collections.OrderedDict(sd)
    keys = list(sd)
    kind = rng.choice(["drop", "add", "rename", "shape", "not_tensor", "prefix_some", "dtype",
                       "empty", "conf_channels", "nested"])
    k = rng.choice(keys)
    if kind == "drop":
        del sd[k]
    elif kind == "add":
        sd[k + ".extra"] = torch.zeros(1)
    elif kind == "rename":
        sd[k[::-1]] = sd.pop(k)
    elif kind == "shape":
        sd[k] = sd[k].reshape(-1)[: max(1, sd[k].numel() - 1)]
    elif kind == "not_tensor":
        sd[k] = rng.choice([None, 3, "x", [1, 2], {"a": 1}])
    elif kind == "prefix_some":
        sd["module." + k] = sd.pop(k)
    elif kind == "dtype":
        sd[k] = sd[k].to(torch.float16)
    elif kind == "empty":
        sd[k] = torch.zeros(0)
    elif kind == "conf_channels":
        sd["conf.0.weight"] = torch.zeros(rng.choice([0, 1, 23, 25, 4 * 7]), 256, 3, 3)
    else:
        sd = {"model": {"model": sd}}
    return sd, kind


def test_damaged_state_dicts_through_the_converter(reference_sd):
    rng = random.Random(0)
    outcomes = collections.Counter()
    # The undamaged one converts (the fuzz starts from a state dict that does).
    assert len(convert_mlperf_state_dict(find_mlperf_checkpoint(reference_sd))) == \
        len(reference_sd)
    for _ in range(max(20, CASES // 10)):
        sd, kind = _damage(reference_sd, rng)
        try:
            ck = find_mlperf_checkpoint(sd, "fuzz", None)
            if ck is None:
                outcomes["not recognised"] += 1
                continue
            out = convert_mlperf_state_dict(ck)
            assert len(out) == len(ck.state_dict)
            outcomes["converted"] += 1
        except CheckpointFormatError as e:
            assert "fuzz" in str(e) or "MLPerf" in str(e), str(e)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0 and outcomes["not recognised"] + outcomes["converted"] > 0


@pytest.mark.parametrize("bad", ["nan_conf", "inf_conf", "nan_loc", "inf_loc", "all_nan"])
def test_inference_on_non_finite_network_outputs_ends_without_nan_boxes(bad, monkeypatch):
    from detectron2.modeling import build_model

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "MODEL.SSD.SCORE_THRESH_TEST", "0.0")
    model = build_model(cfg).eval()
    real = model.forward_network

    def broken(images):
        loc, conf, anchors = real(images)
        loc, conf = loc.clone(), conf.clone()
        half = loc.shape[1] // 2
        if bad in ("nan_conf", "all_nan"):
            conf[:, :half] = float("nan")
        if bad == "inf_conf":
            conf[:, :half, 0] = float("inf")
        if bad in ("nan_loc", "all_nan"):
            loc[:, ::2] = float("nan")
        if bad == "inf_loc":
            loc[:, ::3, 2:] = float("inf")
            loc[:, 1::3, :2] = float("-inf")
        return loc, conf, anchors

    monkeypatch.setattr(model, "forward_network", broken)
    signal.signal(signal.SIGALRM, lambda *a: (_ for _ in ()).throw(TimeoutError("hung")))
    signal.alarm(120)
    try:
        with torch.no_grad():
            out = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8), "height": 64,
                          "width": 64}])[0]["instances"]
    finally:
        signal.alarm(0)
    assert torch.isfinite(out.pred_boxes.tensor).all() and torch.isfinite(out.scores).all()
    assert len(out) <= cfg.TEST.DETECTIONS_PER_IMAGE
    if bad != "all_nan":
        assert len(out) > 0  # the finite half still gives detections
