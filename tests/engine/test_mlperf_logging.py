"""MLPERF.LOG_FILE: the mllog log of a training run, checked by MLPerf's own compliance
checker (package mlperf-logging), for a short run on the built-in data set and for the
1200x1200 config's schedule."""
import json
import os
import subprocess
import sys
import types

import pytest

from conftest import NO_WINOGRAD, ROOT, TINY_TRAIN, make_cfg

pytest.importorskip("mlperf_logging")

TINY = [*TINY_TRAIN, "SOLVER.WARMUP_ITERS", "2", *NO_WINOGRAD]


def check(path):
    """(return code, output) of the compliance checker, ruleset 1.0.0 (SSD's last round)."""
    r = subprocess.run([sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage",
                        "training", "--ruleset", "1.0.0", "--log_output",
                        str(path) + ".checker.txt", str(path)],
                       capture_output=True, text=True, cwd=os.path.dirname(str(path)))
    return r.returncode, r.stdout + r.stderr


def read_log(path):
    return [json.loads(line.split(":::MLLOG", 1)[1]) for line in open(path)
            if line.startswith(":::MLLOG")]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_short_run_log_passes_the_compliance_checker(tmp_path, shapes_val_4):
    from ssd_r34.engine import SSDTrainer
    from ssd_r34.engine.mllog_hook import MLPerfLoggingHook

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "SOLVER.MAX_ITER", "4",
                   "SOLVER.STEPS", "(3,)", "TEST.EVAL_ITERS", "(2,)",
                   "DATASETS.TEST", f"('{shapes_val_4}',)",
                   "OUTPUT_DIR", str(tmp_path), "MLPERF.LOG_FILE", "mlperf.log")
    trainer = SSDTrainer(cfg)
    assert isinstance(trainer._hooks[-1], MLPerfLoggingHook)
    trainer.resume_or_load(resume=False)
    trainer.train()
    log = tmp_path / "mlperf.log"
    rc, out = check(log)
    assert rc == 0 and "SUCCESS" in out, out

    events = read_log(log)
    keys = [e["key"] for e in events]
    first = {e["key"]: e for e in reversed(events)}
    assert keys.index("init_stop") < keys.index("run_start") < keys.index("block_start")
    assert keys[-1] == "run_stop" and events[-1]["metadata"]["status"] == "success"
    assert first["global_batch_size"]["value"] == 2
    assert first["model_bn_span"]["value"] == 2  # BN, one process
    assert first["train_samples"]["value"] == 1000  # shapes_train
    assert first["eval_samples"]["value"] == 4  # shapes_val_4
    assert first["opt_base_learning_rate"]["value"] == cfg.SOLVER.BASE_LR
    assert first["opt_learning_rate_decay_boundary_epochs"]["value"] == [3 * 2 / 1000]
    assert first["seed"]["value"] == 1
    # Two evaluations (after iteration 2 and the last one), at 4 and 8 of the 1000 images.
    accuracy = [e for e in events if e["key"] == "eval_accuracy"]
    assert [e["metadata"]["epoch_num"] for e in accuracy] == [0.004, 0.008]
    assert all(0 <= e["value"] < 1 for e in accuracy)
    assert keys.count("eval_start") == keys.count("eval_stop") == 2
    assert keys.count("block_start") == keys.count("block_stop") == 2
    # The checker really checks: without run_stop the log is refused.
    cut = tmp_path / "cut.log"
    cut.write_text("".join(open(log).readlines()[:-1]))
    rc, out = check(cut)
    assert rc != 0 and "FAILED" in out


def _drive(hook, max_iter, eval_iters, reach_at=None):
    """Runs the hook through a training of ``max_iter`` steps with evaluations after
    ``eval_iters`` (the way SSDTrainer calls it), without a model."""
    trainer = types.SimpleNamespace(iter=0, start_iter=0, max_iter=max_iter, _hooks=[hook])
    hook.trainer = trainer
    hook.before_train()
    evals = set(eval_iters)
    for it in range(max_iter):
        trainer.iter = it
        hook.after_step()
        if it + 1 in evals and it + 1 < max_iter:
            hook.eval_start(it + 1)
            hook.eval_stop(it + 1, 10.0)
            if reach_at == it + 1:
                hook._reached_iter = it
                trainer.max_iter = it + 1
                break
    trainer.iter = trainer.max_iter
    if reach_at is None:  # the evaluation after the last iteration
        hook.eval_start(trainer.max_iter)
        hook.eval_stop(trainer.max_iter, 10.0)
    hook.after_train()


def test_1200_config_log_passes_the_compliance_checker(tmp_path):
    from ssd_r34.engine.mllog_hook import MLPerfLoggingHook

    cfg = make_cfg("configs/ssd_r34_1200.yaml", "MODEL.DEVICE", "cuda")
    hook = MLPerfLoggingHook(cfg, str(tmp_path / "sub" / "ssd1200.log"), train_samples=117266,
                             eval_samples=5000)
    _drive(hook, cfg.SOLVER.MAX_ITER, cfg.TEST.EVAL_ITERS)
    log = tmp_path / "sub" / "ssd1200.log"
    rc, out = check(log)
    assert rc == 0 and "SUCCESS" in out, out
    events = read_log(log)
    keys = [e["key"] for e in events]
    first = {e["key"]: e for e in reversed(events)}
    assert first["global_batch_size"]["value"] == 32
    assert first["model_bn_span"]["value"] == 32  # SyncBN: the whole batch
    assert first["submission_platform"]["value"] == "1xgpu"
    assert first["opt_learning_rate_decay_boundary_epochs"]["value"] == [
        round(160000 * 32 / 117266, 4), round(200000 * 32 / 117266, 4)]
    # 240000 x 32 images = 65.49 epochs: 65 whole epochs start and stop, the 66th starts.
    assert keys.count("epoch_stop") == 65 and keys.count("epoch_start") == 66
    assert keys.count("eval_accuracy") == len(cfg.TEST.EVAL_ITERS) == 10
    # TARGET_AP 0.212 never reached (AP 0.10 here): the run is aborted.
    assert events[-1]["key"] == "run_stop" and events[-1]["metadata"]["status"] == "aborted"


def test_target_reached_is_a_success_and_stops_the_log(tmp_path):
    from ssd_r34.engine.mllog_hook import MLPerfLoggingHook

    cfg = make_cfg("configs/ssd_r34_300_mlperf_v1.yaml")
    assert cfg.TEST.TARGET_AP == 0.23 and cfg.INPUT.FIXED_SIZE == (300, 300)
    hook = MLPerfLoggingHook(cfg, str(tmp_path / "a.log"), train_samples=1000, eval_samples=10)
    _drive(hook, 100, (10, 20, 50), reach_at=20)
    rc, out = check(tmp_path / "a.log")
    assert rc == 0 and "SUCCESS" in out, out
    events = read_log(tmp_path / "a.log")
    assert [e["key"] for e in events].count("eval_accuracy") == 2
    assert events[-1]["metadata"]["status"] == "success"


def test_log_path_and_off_by_default(tmp_path):
    from ssd_r34.engine.mllog_hook import bn_span, mlperf_log_path

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", "OUTPUT_DIR", str(tmp_path))
    assert mlperf_log_path(cfg) == ""
    cfg.MLPERF.LOG_FILE = "x/m.log"
    assert mlperf_log_path(cfg) == os.path.join(str(tmp_path), "x/m.log")
    cfg.MLPERF.LOG_FILE = "/abs/m.log"
    assert mlperf_log_path(cfg) == "/abs/m.log"
    cfg.SOLVER.IMS_PER_BATCH = 32
    assert bn_span(cfg, 8) == 4  # BN: per process
    cfg.MODEL.RESNETS.NORM = "naiveSyncBN"
    assert bn_span(cfg, 8) == 32
    assert os.path.exists(os.path.join(ROOT, "configs", "ssd_r34_300_mlperf_v1.yaml"))
