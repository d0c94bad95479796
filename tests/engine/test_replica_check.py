"""The replica check on its own: ``weights_digest`` (equal exactly for equal tensors, and
changed by any value, dtype, shape, name or entry), ReplicaCheckHook's error (parameters
differ across ranks) and warning (buffers differ), and SOLVER.CHECK_REPLICAS on and off."""
import logging
import types

import pytest
import torch

from conftest import make_cfg
from ssd_r34.engine import hooks
from ssd_r34.engine.hooks import ReplicaCheckHook, weights_digest


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(3, 4, generator=g),
            "a.bias": torch.randn(4, generator=g).double(),
            "bn.num_batches_tracked": torch.tensor(7),
            "mask": torch.tensor([True, False, True])}


def test_equal_tensors_give_equal_digests_whatever_their_layout_or_order():
    t = tensors()
    copy = {k: v.clone() for k, v in reversed(list(t.items()))}  # another dict order
    assert weights_digest(t) == weights_digest(copy) == weights_digest(list(t.items()))
    # a non-contiguous tensor with the same values, and one that requires grad
    t2 = dict(t, **{"a.weight": t["a.weight"].t().contiguous().t()})
    assert not t2["a.weight"].is_contiguous()
    assert weights_digest(t2) == weights_digest(t)
    t3 = dict(t, **{"a.weight": t["a.weight"].clone().requires_grad_()})
    assert weights_digest(t3) == weights_digest(t)
    assert len(weights_digest(t)) == 64 and int(weights_digest(t), 16) >= 0


@pytest.mark.parametrize("name", ["a.weight", "a.bias", "bn.num_batches_tracked", "mask"])
def test_any_changed_value_changes_the_digest(name):
    t = tensors()
    base = weights_digest(t)
    for index in (0, -1):  # first and last element
        changed = {k: v.clone() for k, v in t.items()}
        flat = changed[name].view(-1)
        if flat.dtype == torch.bool:
            flat[index] = ~flat[index]
        elif flat.is_floating_point():
            flat[index] = torch.nextafter(flat[index], flat[index] + 1)  # one ulp
        else:
            flat[index] += 1
        assert weights_digest(changed) != base, (name, index)


def test_dtype_shape_name_and_entries_change_the_digest():
    t = tensors()
    base = weights_digest(t)
    w = t["a.weight"]
    variants = {
        "dtype (same values)": dict(t, **{"a.weight": w.double()}),
        "shape (same bytes)": dict(t, **{"a.weight": w.reshape(4, 3)}),
        "name": {("b.weight" if k == "a.weight" else k): v for k, v in t.items()},
        "entry removed": {k: v for k, v in t.items() if k != "mask"},
        "entry added": dict(t, extra=torch.zeros(1)),
    }
    digests = {k: weights_digest(v) for k, v in variants.items()}
    assert base not in digests.values()
    assert len(set(digests.values())) == len(digests)
    # bit-identical, not equal: -0.0 == 0.0, yet the digests differ
    zeros = torch.zeros_like(w)
    assert torch.equal(zeros, -zeros)
    assert weights_digest({"w": zeros}) != weights_digest({"w": -zeros})


def test_every_parameter_and_buffer_of_a_model_counts():
    """A model's state dict: changing any single entry (parameter or BN buffer) changes it."""
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    state = model.state_dict()
    base = weights_digest(state)
    for name in state:
        changed = {k: v.clone() for k, v in state.items()}
        changed[name].view(-1)[0] += 1
        assert weights_digest(changed) != base, name


# ---- ReplicaCheckHook with several (simulated) ranks ----------------------------------------------
class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self, level):
        return "\n".join(r.getMessage() for r in self.records if r.levelno == level)


@pytest.fixture
def recorder():
    logger = logging.getLogger(hooks.__name__)
    handler, old_level = Recorder(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def small_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))


def digests(model):
    state = model.state_dict()
    names = {n for n, _ in model.named_parameters()}
    return (weights_digest({k: v for k, v in state.items() if k in names}),
            weights_digest({k: v for k, v in state.items() if k not in names}))


def run_hook_as_rank0_of_two(monkeypatch, model, other):
    """ReplicaCheckHook.after_train on rank 0 of 2, rank 1 holding ``other``."""
    monkeypatch.setattr(hooks.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(hooks.comm, "get_rank", lambda: 0)
    monkeypatch.setattr(hooks.comm, "all_gather", lambda mine: [mine, digests(other)])
    hook = ReplicaCheckHook(model)
    hook.trainer = types.SimpleNamespace(iter=5, max_iter=5)
    hook.after_train()


def test_identical_replicas_pass(monkeypatch, recorder):
    run_hook_as_rank0_of_two(monkeypatch, small_model(), small_model())
    assert "Parameters identical on all 2 ranks." in recorder.text(logging.INFO)
    assert not recorder.text(logging.WARNING)


def test_a_parameter_that_differs_on_one_rank_raises_naming_the_rank(monkeypatch, recorder):
    model, other = small_model(), small_model()
    with torch.no_grad():
        other[0].bias[1] += 1e-6
    with pytest.raises(RuntimeError, match=r"Parameters differ across ranks after 5 "
                                           r"iterations: ranks \[1\] differ from rank 0"):
        run_hook_as_rank0_of_two(monkeypatch, model, other)


def test_buffers_that_differ_only_warn(monkeypatch, recorder):
    model, other = small_model(), small_model()
    other[1].running_var[0] = 2.0
    run_hook_as_rank0_of_two(monkeypatch, model, other)
    warning = recorder.text(logging.WARNING)
    assert "Buffers (e.g. BN running statistics) of ranks [1] differ from rank 0's" in warning
    assert "Parameters identical on all 2 ranks." in recorder.text(logging.INFO)


def test_an_unfinished_training_is_not_checked(monkeypatch, recorder):
    model, other = small_model(), small_model(seed=1)
    monkeypatch.setattr(hooks.comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(hooks.comm, "all_gather", lambda mine: [mine, digests(other)])
    hook = ReplicaCheckHook(model)
    hook.trainer = types.SimpleNamespace(iter=3, max_iter=5)
    hook.after_train()  # other ranks may be gone: no comparison, no error
    assert not recorder.records


# ---- SOLVER.CHECK_REPLICAS ---------------------------------------------------------------------
@pytest.mark.parametrize("check", [True, False])
def test_check_replicas_setting(tmp_path, recorder, check):
    """One training step of the tiny model: with the check, the digests of the final
    parameters and buffers are logged (and equal those of the trained model); without it,
    nothing is."""
    from ssd_r34.engine import SSDTrainer

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = make_cfg("configs/ssd_r34_shapes.yaml", "INPUT.FIXED_SIZE", "(64, 64)",
                       "MODEL.SSD.STRIDES", "[1, 1, 1, 1, 1, 1]", "DATALOADER.NUM_WORKERS", "0",
                       "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1",
                       "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1000",
                       "DATASETS.TEST", "()", "SOLVER.CHECK_REPLICAS", str(check),
                       "MODEL.SSD.WINOGRAD", "False",
                       "OUTPUT_DIR", str(tmp_path))
        trainer = SSDTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
    finally:
        torch.set_num_threads(n)
    logged = [r.getMessage() for r in recorder.records if "sha256" in r.getMessage()]
    if not check:
        assert logged == []
        return
    params, buffers = digests(trainer.model)
    assert logged == [f"Weights after 1 iterations, rank 0 of 1: parameters sha256 {params}, "
                      f"buffers sha256 {buffers}"]
