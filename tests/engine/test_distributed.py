"""Distributed training on CPU over gloo: SyncBN statistics, and tools/train_net.py with two
processes on one machine and with two one-process "machines" on 127.0.0.1."""
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import (ROOT, TINY_MODEL, TINY_NET, free_port, make_cfg, one_sgd_step,
                      synthetic_batch)

pytestmark = pytest.mark.usefixtures("one_thread")


SMOOTH_LOSS = ["MODEL.SSD.NEG_POS_RATIO", "100000"]  # every negative counts: no mining


def _syncbn_worker(out_dir):
    """One rank: naiveSyncBN model, DDP (no device ids on CPU), one step on its own data."""
    from detectron2.modeling import build_model
    from detectron2.utils import comm

    from ssd_r34.engine import create_ddp_model

    torch.set_num_threads(1)
    rank = comm.get_rank()
    torch.manual_seed(0)  # same initial weights on both ranks (DDP broadcasts them anyway)
    model = build_model(make_cfg("configs/Base-SSD-R34.yaml", *TINY_MODEL, *SMOOTH_LOSS,
                                 "MODEL.RESNETS.NORM", "naiveSyncBN"))
    model.train()
    ddp = create_ddp_model(model, broadcast_buffers=False)
    one_sgd_step(ddp, synthetic_batch(seed=100 + rank))
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
               os.path.join(out_dir, f"rank{rank}.pth"))


@pytest.mark.slow
def test_naive_syncbn_statistics_match_one_process_on_the_concatenated_batch(tmp_path):
    from detectron2.engine import launch
    from detectron2.modeling import build_model

    launch(_syncbn_worker, 2, dist_url=f"tcp://127.0.0.1:{free_port()}", args=(str(tmp_path),))
    r0 = torch.load(tmp_path / "rank0.pth")
    r1 = torch.load(tmp_path / "rank1.pth")

    # One process, plain BatchNorm2d, both ranks' images in one batch, same initial weights.
    torch.manual_seed(0)
    model = build_model(make_cfg("configs/Base-SSD-R34.yaml", *TINY_MODEL, *SMOOTH_LOSS,
                                 "MODEL.RESNETS.NORM", "BN"))
    model.train()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    bns = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    count = {}  # values per channel that each BN layer normalised: N * H * W
    hooks = [m.register_forward_pre_hook(
        lambda mod, inp, name=n: count.__setitem__(name, inp[0].numel() // inp[0].shape[1]))
        for n, m in bns.items()]
    one_sgd_step(model, synthetic_batch(seed=100) + synthetic_batch(seed=101))
    for h in hooks:
        h.remove()
    single = model.state_dict()

    assert len(bns) == 1 + 2 * (3 + 4 + 6) + 2  # stem, two per BasicBlock, two shortcuts
    for name, bn in bns.items():
        mean, var, m = f"{name}.running_mean", f"{name}.running_var", bn.momentum
        # Both ranks hold the same statistics ...
        torch.testing.assert_close(r0[mean], r1[mean], rtol=0, atol=0)
        torch.testing.assert_close(r0[var], r1[var], rtol=0, atol=0)
        # ... which are the statistics of the whole (concatenated) batch. The running mean
        # is updated exactly like nn.BatchNorm2d's ...
        torch.testing.assert_close(r0[mean], single[mean], rtol=1e-5, atol=1e-5)
        # ... but Detectron2's NaiveSyncBatchNorm folds in the biased batch variance where
        # nn.BatchNorm2d uses the unbiased one (n / (n - 1)), and it does not advance
        # num_batches_tracked. Both started from running_mean = 0, running_var = 1.
        assert (initial[mean] == 0).all() and (initial[var] == 1).all()
        n = count[name]
        unbiased = (single[var] - (1 - m)) / m
        expected = (1 - m) + m * unbiased * (n - 1) / n
        torch.testing.assert_close(r0[var], expected, rtol=1e-5, atol=1e-5)
        nbt = f"{name}.num_batches_tracked"
        assert int(r0[nbt]) == 0 and int(single[nbt]) == int(initial[nbt]) + 1
    # The step itself (gradients averaged by DDP, through the synchronised BN) is the
    # single-process step on the whole batch, up to rounding: convolutions on 2 images and
    # on 4 round differently, and one step of this random-initialised network amplifies that
    # to ~1e-3 of the update (measured; swapping the images of the 4-batch: ~1e-6). All
    # negatives are used in the loss (NEG_POS_RATIO huge) so that no hard-negative selection
    # can flip on a near tie.
    diff = norm = 0.0
    for k, v in single.items():
        if v.is_floating_point() and "running_" not in k:
            torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)
            diff += (r0[k] - v).double().norm().item() ** 2
            norm += (v - initial[k]).double().norm().item() ** 2
    assert norm > 0 and (diff / norm) ** 0.5 < 1e-2


# ---- tools/train_net.py on several processes ---------------------------------------------
TRAIN_NET = os.path.join(ROOT, "tools", "train_net.py")
# The built-in set at 64x64, a few steps, no evaluation (DATASETS.TEST empty).
TINY_RUN = ["--config-file", os.path.join(ROOT, "configs", "ssd_r34_shapes.yaml"),
            "MODEL.DEVICE", "cpu", "MODEL.RESNETS.NORM", "naiveSyncBN", *TINY_NET,
            "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.MAX_ITER", "3",
            "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1000", "DATASETS.TEST", "()",
            "SEED", "3"]
DIGEST = re.compile(r"Weights after (\d+) iterations, rank (\d+) of (\d+): parameters sha256 "
                    r"([0-9a-f]{64}), buffers sha256 ([0-9a-f]{64})")


# Installed as sitecustomize.py in the training processes (every rank, spawned ones
# included): when ReplicaCheckHook runs, each rank also saves its state dict to
# $SSD_R34_REPLICA_DIR/rank<R>.pth, so that the test compares the tensors themselves, not
# only the digests the hook logs. The hook module is patched when it is first imported.
DUMP_REPLICAS = '''
import importlib.abc, importlib.machinery, os, sys


def _patch(hooks):
    checked = hooks.ReplicaCheckHook.after_train

    def after_train(self):
        import torch
        from detectron2.utils import comm

        if self.trainer.iter >= self.trainer.max_iter:
            state = hooks._unwrap(self._model).state_dict()
            torch.save({k: v.detach().cpu() for k, v in state.items()},
                       os.path.join(os.environ["SSD_R34_REPLICA_DIR"], f"rank{comm.get_rank()}.pth"))
        checked(self)

    hooks.ReplicaCheckHook.after_train = after_train


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "ssd_r34.engine.hooks":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Finder())
'''


def subprocess_env(replica_dir=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",  # tools need ssd_r34
               PYTHONPATH=os.pathsep.join([ROOT] + ([os.environ["PYTHONPATH"]]
                                                    if os.environ.get("PYTHONPATH") else [])))
    env.setdefault("SSD_R34_DATASETS", os.environ["SSD_R34_DATASETS"])
    if replica_dir is not None:
        os.makedirs(replica_dir, exist_ok=True)
        with open(os.path.join(replica_dir, "sitecustomize.py"), "w") as f:
            f.write(DUMP_REPLICAS)
        env["PYTHONPATH"] = os.pathsep.join([str(replica_dir)] + (
            [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env["SSD_R34_REPLICA_DIR"] = str(replica_dir)
    return env


def run_all(commands, timeout=240, replica_dir=None):
    """Start the commands together, wait for all; return their (returncode, output).
    With ``replica_dir``, every rank saves its final state dict there (DUMP_REPLICAS)."""
    procs = [subprocess.Popen(c, cwd=ROOT, env=subprocess_env(replica_dir), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in commands]
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.returncode, out))
    return outs


def logged_digests(out_dir):
    """rank -> (iterations, world size, parameter digest, buffer digest), from the
    log.txt / log.txt.rankN that every rank writes into OUTPUT_DIR."""
    found = {}
    for name in os.listdir(out_dir):
        if name.startswith("log.txt"):
            with open(os.path.join(out_dir, name)) as f:
                for m in DIGEST.finditer(f.read()):
                    found[int(m.group(2))] = (int(m.group(1)), int(m.group(3)), m.group(4),
                                              m.group(5))
    return found


def saved_digests(path, config_opts=()):
    """(parameter, buffer) digests of a saved model, as ReplicaCheckHook computes them."""
    from detectron2.modeling import build_model

    from ssd_r34.engine.hooks import weights_digest

    state = torch.load(path, map_location="cpu", weights_only=False)["model"]
    model = build_model(make_cfg("configs/ssd_r34_shapes.yaml", *config_opts))
    params = {n for n, _ in model.named_parameters()}
    return (weights_digest({k: v for k, v in state.items() if k in params}),
            weights_digest({k: v for k, v in state.items() if k not in params}))


def check_identical_replicas(out_dir, outputs, world, replica_dir):
    for rc, out in outputs:
        assert rc == 0, out[-3000:]
    # The tensors themselves: every rank's final state dict equals rank 0's bit for bit,
    # and rank 0's is what model_final.pth holds.
    states = [torch.load(os.path.join(replica_dir, f"rank{r}.pth")) for r in range(world)]
    final = torch.load(os.path.join(out_dir, "model_final.pth"), map_location="cpu",
                       weights_only=False)["model"]
    assert sorted(final) == sorted(states[0]) and len(final) > 100
    for r, state in enumerate(states):
        for k, v in final.items():
            assert state[k].dtype == v.dtype and torch.equal(state[k], v), (r, k)
    # ... and the digests the ranks logged agree with that:
    digests = logged_digests(out_dir)
    assert sorted(digests) == list(range(world)), digests
    assert {d[:2] for d in digests.values()} == {(3, world)}
    # Every rank ends with the same parameters, and (naiveSyncBN) the same BN statistics ...
    assert len({d[2:] for d in digests.values()}) == 1, digests
    # ... which are what rank 0 saved.
    params, buffers = saved_digests(os.path.join(out_dir, "model_final.pth"), TINY_NET)
    assert (params, buffers) == digests[0][2:]
    log = open(os.path.join(out_dir, "log.txt")).read()
    assert f"Parameters identical on all {world} ranks." in log


def test_two_processes_on_one_machine_end_with_identical_weights(tmp_path):
    """--num-gpus 2 MODEL.DEVICE cpu: launch spawns two processes (gloo, no device ids).
    (The one multi-process test of `make test`; the others are marked slow.)"""
    out_dir = str(tmp_path / "run")
    replicas = str(tmp_path / "replicas")
    outputs = run_all([[sys.executable, TRAIN_NET, "--num-gpus", "2", "--dist-url",
                        f"tcp://127.0.0.1:{free_port()}", *TINY_RUN, "OUTPUT_DIR", out_dir]],
                      replica_dir=replicas)
    check_identical_replicas(out_dir, outputs, world=2, replica_dir=replicas)


@pytest.mark.slow
def test_two_machines_of_one_process_end_with_identical_weights(tmp_path):
    """Two "machines" (--num-machines 2 --machine-rank 0/1) rendez-vous over
    tcp://127.0.0.1:PORT; they share OUTPUT_DIR as machines would share a file system."""
    out_dir = str(tmp_path / "run")
    url = f"tcp://127.0.0.1:{free_port()}"
    replicas = str(tmp_path / "replicas")
    outputs = run_all([[sys.executable, TRAIN_NET, "--num-machines", "2", "--machine-rank",
                        str(r), "--num-gpus", "1", "--dist-url", url, *TINY_RUN,
                        "OUTPUT_DIR", out_dir] for r in (0, 1)], replica_dir=replicas)
    check_identical_replicas(out_dir, outputs, world=2, replica_dir=replicas)
