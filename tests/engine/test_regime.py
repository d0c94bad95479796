"""The three-stage regime (300 -> 700 -> 1200): stage configs, the commands of
tools/train_regime.py, and the whole chain on the built-in data set at tiny sizes."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from test_distributed import subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread")

REGIME = os.path.join(ROOT, "tools", "train_regime.py")


def run_regime(*args, timeout=400):
    p = subprocess.run([sys.executable, REGIME, *args], cwd=ROOT, env=subprocess_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout)
    return p.returncode, p.stdout


def test_stage_configs_carry_the_seeds_regime():
    from conftest import make_cfg

    stages = {k: make_cfg(f"configs/ssd_r34_{k}.yaml") for k in (300, 700, 1200)}
    got = {k: (tuple(c.INPUT.FIXED_SIZE), tuple(c.MODEL.SSD.STRIDES), c.SOLVER.IMS_PER_BATCH,
               c.REGIME.NUM_GPUS, c.REGIME.PREVIOUS_STAGE, c.REGIME.PREVIOUS_ITER)
           for k, c in stages.items()}
    assert got == {
        300: ((300, 300), (1, 1, 2, 2, 2, 1), 32, 1, "", 0),
        700: ((700, 700), (1, 1, 2, 2, 2, 1), 32, 4, "ssd_r34_300.yaml", 24000),
        1200: ((1200, 1200), (3, 3, 2, 2, 2, 2), 32, 8, "ssd_r34_700.yaml", 24000),
    }
    for c in stages.values():  # the seed's --evaluation and --threshold
        assert c.TEST.TARGET_AP == 0.212 and 120000 in c.TEST.EVAL_ITERS


def _regime_in_process(capsys, *args):
    from ssd_r34.cli.train_regime import main

    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def test_dry_run_prints_the_three_train_net_commands(capsys):
    rc, out = _regime_in_process(capsys, "--dry-run")
    assert rc == 0, out
    cmds = [line for line in out.splitlines() if "-m ssd_r34.cli.train_net" in line]
    assert len(cmds) == 3
    assert "ssd_r34_300.yaml --num-gpus 1 SOLVER.MAX_ITER 24000" in cmds[0]
    assert ("ssd_r34_700.yaml --num-gpus 4 --dist-url auto SOLVER.MAX_ITER 24000 "
            "MODEL.WEIGHTS output/ssd_r34_300/model_final.pth") in cmds[1]
    assert cmds[2].endswith("ssd_r34_1200.yaml --num-gpus 8 --dist-url auto "
                            "MODEL.WEIGHTS output/ssd_r34_700/model_final.pth")
    # --full-stages hands over the periodic checkpoint of iteration 24000.
    rc, out = _regime_in_process(capsys, "--dry-run", "--full-stages")
    assert rc == 0 and "MODEL.WEIGHTS output/ssd_r34_300/model_0023999.pth" in out, out
    rc, out = _regime_in_process(capsys, "--dry-run", "--num-gpus", "1", "2")
    assert rc == 2 and "one number or 3" in out


def test_stages_run_in_order_a_failure_stops_the_chain_and_resume_skips_finished_ones(
        tmp_path, capsys, monkeypatch):
    """The runner without training: each stage's train_net.py command is recorded and, unless
    it is told to fail, "finishes" (last_checkpoint names model_final.pth, as a finished
    train_net.py leaves it). The real chain: the end-to-end test below."""
    ran, fail = [], {}

    def fake_call(cmd):
        ran.append(cmd)
        out_dir = cmd[cmd.index("OUTPUT_DIR") + 1]
        if fail.get(out_dir):
            return fail[out_dir]
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "last_checkpoint"), "w") as f:
            f.write("model_final.pth")
        return 0

    monkeypatch.setattr(subprocess, "call", fake_call)
    root = str(tmp_path)
    dirs = [os.path.join(root, f"ssd_r34_{k}") for k in (300, 700, 1200)]
    common = ["--num-gpus", "1", "--previous-iter", "2", "--output-root", root,
              "SOLVER.MAX_ITER", "2"]
    fail[dirs[1]] = 3
    rc, out = _regime_in_process(capsys, *common)
    assert rc == 3 and len(ran) == 2, out
    assert "# stage 2 failed (exit status 3); fix and rerun with --resume" in out
    for prev, cmd in zip(dirs, ran[1:]):  # each stage from the previous one's final weights
        assert cmd[cmd.index("MODEL.WEIGHTS") + 1] == os.path.join(prev, "model_final.pth")
    assert "--resume" not in ran[0]

    del fail[dirs[1]]
    ran.clear()
    rc, out = _regime_in_process(capsys, "--resume", *common)
    assert rc == 0, out
    assert "# stage 1 already finished (model_final.pth): skipped" in out
    assert [cmd[cmd.index("OUTPUT_DIR") + 1] for cmd in ran] == dirs[1:]
    assert all("--resume" in cmd for cmd in ran)
    ran.clear()
    rc, out = _regime_in_process(capsys, "--resume", *common)
    assert rc == 0 and not ran and out.count("already finished") == 3, out


@pytest.mark.slow  # the runner's logic: the test above
def test_the_regime_runs_end_to_end_on_the_built_in_set(tmp_path, capsys):
    """Three stages of 2 iterations (64x64, then 80x80, then 96x96 with other strides), each
    from the previous stage's final weights. Stage 3 has a zero learning rate: its
    parameters must be exactly stage 2's, i.e. loaded, not re-initialised. (One process a
    stage to save time here; several processes: tests/engine/test_distributed.py.)"""
    root = str(tmp_path)
    common = ["MODEL.DEVICE", "cpu", "DATASETS.TRAIN", "('shapes_train',)", "DATASETS.TEST", "()",
              "MODEL.SSD.NUM_CLASSES", "3", "DATALOADER.NUM_WORKERS", "0",
              "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SEED", "5"]
    rc, out = run_regime(
        "--num-gpus", "1", "--previous-iter", "2", "--output-root", root,
        "--stage-opts", "1", "INPUT.FIXED_SIZE '(64, 64)' MODEL.SSD.STRIDES '[1,1,1,1,1,1]'",
        "--stage-opts", "2", "INPUT.FIXED_SIZE '(80, 80)' MODEL.SSD.STRIDES '[1,1,2,1,1,1]'",
        "--stage-opts", "3", "INPUT.FIXED_SIZE '(96, 96)' MODEL.SSD.STRIDES '[1,1,2,1,1,1]' "
        "SOLVER.BASE_LR 0.0", *common)
    assert rc == 0, out[-4000:]
    dirs = [os.path.join(root, f"ssd_r34_{k}") for k in (300, 700, 1200)]
    finals = [torch.load(os.path.join(d, "model_final.pth"), weights_only=False) for d in dirs]
    assert [f["iteration"] for f in finals] == [1, 1, 1]  # a fresh counter in every stage
    for prev, d in zip(dirs, dirs[1:]):
        log = open(os.path.join(d, "log.txt")).read()
        assert f"Loading from {os.path.join(prev, 'model_final.pth')}" in log
        assert "Starting training from iteration 0" in log
    params = [n for n in finals[2]["model"] if not any(
        s in n for s in ("running_mean", "running_var", "num_batches_tracked"))]
    assert any(not torch.equal(finals[0]["model"][n], finals[1]["model"][n]) for n in params)
    for n in params:
        assert torch.equal(finals[1]["model"][n], finals[2]["model"][n]), n

    # --resume after the end: every stage is finished, nothing runs again.
    rc, out = _regime_in_process(capsys, "--resume", "--num-gpus", "1", "--previous-iter", "2",
                                 "--output-root", root, *common)
    assert rc == 0 and out.count("already finished") == 3, out[-3000:]
