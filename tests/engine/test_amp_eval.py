"""Mixed precision (bf16 autocast on CPU, the CUDA choice, fp16 on CPU refused) and
MLPerf-style evaluation at chosen iterations with an early stop at a target AP."""
import json
import math

import pytest
import torch

from conftest import TINY_TRAIN, make_cfg, synthetic_batch

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = [*TINY_TRAIN, "DATASETS.TEST", "()"]


def test_bf16_autocast_trains_on_cpu_with_float32_losses(tmp_path):
    from ssd_r34.engine import SSDTrainer
    from ssd_r34.engine.train_loop import CPUAMPTrainer

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "SOLVER.MAX_ITER", "2",
                   "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bfloat16",
                   "OUTPUT_DIR", str(tmp_path))
    trainer = SSDTrainer(cfg)
    assert isinstance(trainer._trainer, CPUAMPTrainer)
    assert trainer._trainer.precision == torch.bfloat16
    model = trainer.model
    seen = {}

    def record_head(module, inputs, out):
        seen.setdefault("head", {t.dtype for t in out[0] + out[1]})

    def record_losses(module, inputs, out):
        seen.setdefault("losses", {k: (v.dtype, v.item()) for k, v in out.items()})

    model.head.register_forward_hook(record_head)
    model.register_forward_hook(record_losses)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 2
    assert seen["head"] == {torch.bfloat16}  # the network ran in bf16 ...
    assert {d for d, _ in seen["losses"].values()} == {torch.float32}  # ... the losses in fp32
    assert all(math.isfinite(v) for _, v in seen["losses"].values())
    after = model.state_dict()
    for name, p in model.named_parameters():  # master weights stay fp32 and were updated
        assert p.dtype == torch.float32
    assert any(not torch.equal(before[k], after[k]) for k, _ in model.named_parameters())


def test_amp_dtype_choice_and_fp16_on_cpu_refused():
    from detectron2.engine import AMPTrainer

    from ssd_r34.engine.train_loop import build_step_trainer

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def cfg(device, dtype):
        return make_cfg("configs/ssd_r34_shapes.yaml", "SOLVER.AMP.ENABLED", "True",
                        "SOLVER.AMP.DTYPE", dtype, "MODEL.DEVICE", device)

    with pytest.raises(ValueError, match="bfloat16 autocast only"):
        build_step_trainer(cfg("cpu", "float16"), model, [], opt)
    with pytest.raises(ValueError, match="'float16' or 'bfloat16'"):
        build_step_trainer(cfg("cpu", "float8"), model, [], opt)
    # CUDA: Detectron2's own AMPTrainer in the chosen precision (not run here: no GPU).
    for dtype, expected in (("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        t = build_step_trainer(cfg("cuda", dtype), model, [], opt)
        assert type(t) is AMPTrainer and t.precision == expected


class ScriptedEvalTrainer:
    """SSDTrainer whose evaluation returns scripted box APs (percent) in turn."""

    @staticmethod
    def make(aps):
        from ssd_r34.engine import SSDTrainer

        class Trainer(SSDTrainer):
            calls = []

            @classmethod
            def test(cls, cfg, model, evaluators=None):
                cls.calls.append(len(cls.calls))
                ap = aps[min(len(cls.calls) - 1, len(aps) - 1)]
                return {"bbox": {"AP": ap, "AP50": 2 * ap}}

        return Trainer


def _metrics(folder):
    with open(folder / "metrics.json") as f:
        return [json.loads(line) for line in f]


def test_evaluation_at_chosen_iterations_and_early_stop_at_the_target(tmp_path):
    opts = [*TINY, "DATASETS.TEST", "('shapes_val',)", "SOLVER.MAX_ITER", "10",
            "TEST.EVAL_ITERS", "(1, 2, 6)", "TEST.TARGET_AP", "0.2", "OUTPUT_DIR", str(tmp_path)]
    Trainer = ScriptedEvalTrainer.make([10.0, 25.0])  # AP 0.10 after 1 step, 0.25 after 2
    trainer = Trainer(make_cfg("configs/ssd_r34_shapes.yaml", *opts))
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert len(Trainer.calls) == 2  # after iterations 1 and 2, then stopped: no final eval
    assert trainer.iter == trainer.max_iter == 2
    final = torch.load(tmp_path / "model_final.pth", weights_only=False)
    assert final["iteration"] == 1
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    rows = {r["iteration"]: r for r in _metrics(tmp_path) if "bbox/AP" in r}
    assert {k: (r["bbox/AP"], r["target_reached"]) for k, r in rows.items()} == \
        {0: (10.0, 0.0), 1: (25.0, 1.0)}

    # --resume of a run that reached its target trains no further.
    again = Trainer(make_cfg("configs/ssd_r34_shapes.yaml", *opts))
    again.resume_or_load(resume=True)
    assert again.start_iter == 2
    again.train()
    assert again.iter == 2 and len(Trainer.calls) == 2


def test_without_a_target_evaluation_runs_at_the_chosen_iterations_and_at_the_end(tmp_path):
    Trainer = ScriptedEvalTrainer.make([50.0])
    trainer = Trainer(make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "DATASETS.TEST",
                               "('shapes_val',)", "SOLVER.MAX_ITER", "2", "TEST.EVAL_ITERS",
                               "(1, 2)", "OUTPUT_DIR", str(tmp_path)))
    trainer.train()
    assert trainer.iter == 2 and len(Trainer.calls) == 2  # after 1, and at the end (2)
    rows = [r for r in _metrics(tmp_path) if "bbox/AP" in r]
    assert [r["iteration"] for r in rows] == [0, 2]  # the final one at max_iter, as EvalHook
    assert all("target_reached" not in r for r in rows)


def test_a_target_reached_at_the_final_evaluation_is_recorded(tmp_path):
    Trainer = ScriptedEvalTrainer.make([30.0])
    trainer = Trainer(make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "DATASETS.TEST",
                               "('shapes_val',)", "SOLVER.MAX_ITER", "2", "TEST.TARGET_AP", "0.2",
                               "OUTPUT_DIR", str(tmp_path)))
    trainer.train()
    assert trainer.iter == trainer.max_iter == 2 and len(Trainer.calls) == 1
    assert torch.load(tmp_path / "model_final.pth", weights_only=False)["iteration"] == 1
    rows = [r for r in _metrics(tmp_path) if "bbox/AP" in r]
    assert [(r["iteration"], r["target_reached"]) for r in rows] == [(2, 1.0)]


def test_cpu_amp_step_equals_autocast_around_the_forward_only():
    """CPUAMPTrainer runs SimpleTrainer's whole step under autocast; the gradients and the
    updated weights must be those of autocast around the forward (and loss) alone."""
    from detectron2.modeling import build_model

    from ssd_r34.engine.train_loop import CPUAMPTrainer

    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    data = synthetic_batch(0, n=2, size=64)
    ref = build_model(cfg).train()
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)

    trainer = CPUAMPTrainer(model, [data], opt, precision=torch.bfloat16)
    trainer.iter = 0
    from detectron2.utils.events import EventStorage

    with EventStorage(0):
        trainer.run_step()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = sum(ref(data).values())
    ref_opt.zero_grad()
    losses.backward()
    ref_opt.step()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        assert p.grad is not None and torch.equal(p.grad, q.grad), name
        assert torch.equal(p, q), name
