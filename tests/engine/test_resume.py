"""Surviving a crash: atomic checkpoint files, a data stream that resumes where it was,
and a CPU training killed with SIGKILL then resumed to the same weights as an
uninterrupted run."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY_NET
from test_distributed import TRAIN_NET, logged_digests, run_all, subprocess_env

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- atomic checkpoint files -------------------------------------------------------------
def _checkpointer(folder):
    from detectron2.checkpoint import DetectionCheckpointer

    from ssd_r34.checkpoint.atomic_io import make_checkpointer_atomic

    torch.manual_seed(0)
    return make_checkpointer_atomic(DetectionCheckpointer(torch.nn.Linear(3, 2), str(folder)))


def test_a_save_interrupted_midway_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    import fvcore.common.checkpoint as fvc

    ckpt = _checkpointer(tmp_path)
    ckpt.save("model_a", iteration=1)
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    good = (tmp_path / "model_a.pth").read_bytes()

    def crashing_save(obj, f):  # half a file, then the "crash"
        f.write(good[: len(good) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(fvc.torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_b", iteration=2)
    # Also over an existing file: the old content stays until a complete new one replaces it.
    with pytest.raises(KeyboardInterrupt):
        ckpt.save("model_a", iteration=3)
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_a.pth"]  # no temp file
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    assert (tmp_path / "model_a.pth").read_bytes() == good
    assert ckpt.resume_or_load("", resume=True)["iteration"] == 1


def test_a_process_killed_while_writing_publishes_nothing(tmp_path):
    """The process dies (os._exit: no cleanup) in the middle of an atomic write: the target
    does not exist, last_checkpoint is untouched, and the next checkpointer on the folder
    removes the temporary file."""
    (tmp_path / "last_checkpoint").write_text("model_a.pth")
    # (atomic_io loaded on its own: no torch / Detectron2 import in the child, it is quick)
    module = os.path.join(ROOT, "ssd_r34", "checkpoint", "atomic_io.py")
    code = ("import importlib.util as u, os; "
            f"s = u.spec_from_file_location('atomic_io', {module!r}); "
            "m = u.module_from_spec(s); s.loader.exec_module(m); pm = m.AtomicPathManager(None); "
            f"f = pm.open({str(tmp_path / 'model_b.pth')!r}, 'wb'); "
            "f.write(b'x' * 100000); f.flush(); "
            f"g = pm.open({str(tmp_path / 'last_checkpoint')!r}, 'w'); "
            "g.write('model_b.pth'); g.flush(); os._exit(9)")
    rc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env()).returncode
    assert rc == 9
    left = sorted(os.listdir(tmp_path))
    assert "model_b.pth" not in left and len(left) == 3, left  # last_checkpoint + 2 temp files
    assert (tmp_path / "last_checkpoint").read_text() == "model_a.pth"
    _checkpointer(tmp_path)
    assert os.listdir(tmp_path) == ["last_checkpoint"]


# ---- the data stream -----------------------------------------------------------------------
def test_the_resumable_sampler_is_detectron2s_stream_and_continues_from_any_point():
    from detectron2.data.samplers import TrainingSampler

    from ssd_r34.data.loader import ResumableTrainingSampler

    def take(it, n):
        return [next(it) for _ in range(n)]

    full = take(iter(ResumableTrainingSampler(7, seed=5)), 40)
    # Same indices, in the same order, as Detectron2's TrainingSampler with the same seed.
    assert [i for _, i in full] == take(iter(TrainingSampler(7, seed=5)), 40)
    # Every position has its own augmentation seed.
    assert len({s for s, _ in full}) == 40
    for start in (0, 3, 7, 19):  # within the first epoch, at an epoch boundary, later
        s = ResumableTrainingSampler(7, seed=5)
        s.set_progress(5, start)
        assert take(iter(s), 40 - start) == full[start:]
    # Sharded over two ranks, as TrainingSampler does: rank r takes r, r + 2, ...
    for rank in (0, 1):
        s = ResumableTrainingSampler(7, seed=5, start=6)
        s._rank, s._world_size = rank, 2
        assert take(iter(s), 10) == full[6 + rank::2][:10]


def test_augmentations_depend_on_the_stream_position_only():
    from ssd_r34.data.loader import SeededMapDataset

    def noisy_mapper(d):  # draws from all three global generators
        import random
        return (d["i"], random.random(), float(np.random.rand()), float(torch.rand(())))

    ds = SeededMapDataset([{"i": k} for k in range(5)], noisy_mapper)
    a = ds[(123, 2)]
    np.random.rand(), torch.rand(3)  # whatever ran before must not matter
    assert ds[(123, 2)] == a and ds[(124, 2)] != a and a[0] == 2
    state = torch.get_rng_state()
    ds[(7, 1)]
    assert torch.equal(torch.get_rng_state(), state)  # global generators restored


def test_the_training_loader_continues_after_the_consumed_images_whatever_the_workers():
    """Batches from a loader restarted after k batches are the batches k, k+1, ... of an
    uninterrupted one (same images, same augmentations), with 0 or 2 worker processes."""
    from conftest import make_cfg
    from ssd_r34.engine import SSDTrainer
    from ssd_r34.data.loader import find_resumable_sampler

    def batches(workers, skip_batches=0, n=3):
        cfg = make_cfg("configs/ssd_r34_shapes.yaml", "INPUT.FIXED_SIZE", "(64, 64)",
                       "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", str(workers),
                       "SEED", "11")
        loader = SSDTrainer.build_train_loader(cfg)
        sampler = find_resumable_sampler(loader)
        sampler.set_progress(sampler.seed, 2 * skip_batches)
        it = iter(loader)
        out = [[(d["file_name"], d["image"], d["instances"].gt_boxes.tensor) for d in next(it)]
               for _ in range(n)]
        del it
        return out

    def same(a, b):
        return all(x[0] == y[0] and torch.equal(x[1], y[1]) and torch.equal(x[2], y[2])
                   for bx, by in zip(a, b) for x, y in zip(bx, by))

    straight = batches(0, n=5)
    assert same(batches(0, skip_batches=2), straight[2:])
    assert same(batches(2, skip_batches=2), straight[2:])
    assert not same(straight[:1], straight[1:2])


# ---- kill -9, --resume ----------------------------------------------------------------------
RUN = ["--config-file", os.path.join(ROOT, "configs", "ssd_r34_shapes.yaml"),
       "MODEL.DEVICE", "cpu", *TINY_NET, "DATALOADER.NUM_WORKERS", "0",
       "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "8", "SOLVER.WARMUP_ITERS", "0",
       "SOLVER.STEPS", "(5,)", "DATASETS.TEST", "()", "SEED", "7"]


def _last_checkpoint(out_dir):
    try:
        with open(os.path.join(out_dir, "last_checkpoint")) as f:
            return f.read().strip()
    except OSError:
        return ""


def test_a_training_stopped_after_a_checkpoint_resumes_to_the_weights_of_an_uninterrupted_run(
        tmp_path):
    """In-process, the kill -9 test below without its processes: a training that dies (an
    exception) at iteration 5 of 8 after its checkpoint of iteration 3, resumed with
    resume_or_load(resume=True), ends with the uninterrupted run's weights, bit for bit."""
    from detectron2.engine import HookBase

    from conftest import make_cfg
    from ssd_r34.engine import SSDTrainer

    class Died(Exception):
        pass

    class DieAt(HookBase):
        def after_step(self):
            if self.trainer.iter == 4:
                raise Died

    def trainer(out_dir, period):
        torch.manual_seed(7)  # the same initial weights (train_net.py: SEED)
        return SSDTrainer(make_cfg(RUN[1], *RUN[2:], "SOLVER.CHECKPOINT_PERIOD", str(period),
                                   "OUTPUT_DIR", str(out_dir)))

    straight = trainer(tmp_path / "straight", 1000)
    straight.resume_or_load(resume=False)
    straight.train()
    dying = trainer(tmp_path / "died", 2)
    dying.register_hooks([DieAt()])
    dying.resume_or_load(resume=False)
    with pytest.raises(Died):
        dying.train()
    assert _last_checkpoint(tmp_path / "died") == "model_0000003.pth"
    resumed = trainer(tmp_path / "died", 2)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 4
    resumed.train()
    a = torch.load(tmp_path / "died" / "model_final.pth", weights_only=False)
    b = torch.load(tmp_path / "straight" / "model_final.pth", weights_only=False)
    assert a["iteration"] == b["iteration"] == 7
    assert a["trainer"]["hooks"]["DataProgressHook"]["images_consumed"] == 16
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


@pytest.mark.slow  # in-process: the test above
def test_training_killed_with_sigkill_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    killed, straight = str(tmp_path / "killed"), str(tmp_path / "straight")
    env = subprocess_env()
    # The interrupted run (a checkpoint every 2 iterations), and meanwhile the reference run.
    victim = subprocess.Popen([sys.executable, TRAIN_NET, *RUN, "SOLVER.CHECKPOINT_PERIOD", "2",
                               "OUTPUT_DIR", killed], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reference = subprocess.Popen([sys.executable, TRAIN_NET, *RUN, "SOLVER.CHECKPOINT_PERIOD",
                                  "1000", "OUTPUT_DIR", straight], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while _last_checkpoint(killed) not in ("model_0000003.pth", "model_0000005.pth"):
            assert victim.poll() is None and time.time() < deadline, "no checkpoint in time"
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)  # mid-training, after 4 or 6 of 8 iterations
        assert victim.wait() == -signal.SIGKILL
    finally:
        victim.kill()
    ref_out, _ = reference.communicate(timeout=240)
    assert reference.returncode == 0, ref_out[-3000:]

    last = _last_checkpoint(killed)
    assert last != "model_final.pth" and not os.path.exists(os.path.join(killed, "model_final.pth"))
    done = int(last[len("model_"):-len(".pth")]) + 1  # iterations in the last checkpoint
    # Every checkpoint file is complete and loadable.
    for name in os.listdir(killed):
        if name.endswith(".pth"):
            assert torch.load(os.path.join(killed, name), weights_only=False)["iteration"] == \
                int(name[6:13])

    [(rc, out)] = run_all([[sys.executable, TRAIN_NET, "--resume", *RUN,
                            "SOLVER.CHECKPOINT_PERIOD", "2", "OUTPUT_DIR", killed]])
    assert rc == 0, out[-3000:]
    assert f"Starting training from iteration {done}" in out
    assert f"resumes after {done * 2} images" in out
    assert not [n for n in os.listdir(killed) if n.endswith(".tmp")]

    # Same final weights and BN statistics, bit for bit, as the uninterrupted run: same
    # iteration, optimizer, LR schedule, data order and augmentations after the resume.
    resumed, uninterrupted = logged_digests(killed)[0], logged_digests(straight)[0]
    assert resumed[0] == uninterrupted[0] == 8
    assert resumed[2:] == uninterrupted[2:]
    a = torch.load(os.path.join(killed, "model_final.pth"), weights_only=False)
    b = torch.load(os.path.join(straight, "model_final.pth"), weights_only=False)
    assert a["iteration"] == b["iteration"] == 7
    assert a["trainer"]["hooks"]["DataProgressHook"]["images_consumed"] == 16
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
