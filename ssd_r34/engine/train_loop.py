"""The step trainer of SSDTrainer: plain, or mixed precision on CUDA or CPU."""
import torch

from detectron2.engine import AMPTrainer, SimpleTrainer

_DTYPES = {"float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


class CPUAMPTrainer(SimpleTrainer):
    """SimpleTrainer's step under ``torch.autocast("cpu", dtype)`` (Detectron2's AMPTrainer
    is CUDA's); bfloat16 needs no gradient scaling. Autocast casts forward ops only: backward
    and optimizer step compute what they would outside it (tests/engine/test_amp_eval.py)."""

    def __init__(self, model, data_loader, optimizer, precision=torch.bfloat16):
        super().__init__(model, data_loader, optimizer)
        self.precision = precision

    def run_step(self):
        with torch.autocast("cpu", dtype=self.precision):
            super().run_step()


def build_step_trainer(cfg, model, data_loader, optimizer):
    """SimpleTrainer, or with SOLVER.AMP.ENABLED Detectron2's AMPTrainer in SOLVER.AMP.DTYPE
    on CUDA (a GradScaler for float16 only), :class:`CPUAMPTrainer` (bfloat16) on CPU."""
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    dtype = _DTYPES.get(str(cfg.SOLVER.AMP.DTYPE).lower())
    if dtype is None:
        raise ValueError(f"SOLVER.AMP.DTYPE must be 'float16' or 'bfloat16', got "
                         f"{cfg.SOLVER.AMP.DTYPE!r}.")
    device = torch.device(cfg.MODEL.DEVICE).type
    if device == "cuda":
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        return AMPTrainer(model, data_loader, optimizer, grad_scaler=scaler, precision=dtype)
    if device == "cpu":
        if dtype != torch.bfloat16:
            raise ValueError(
                "SOLVER.AMP.ENABLED on CPU (MODEL.DEVICE cpu) runs bfloat16 autocast only: set "
                "SOLVER.AMP.DTYPE bfloat16 (float16 is for CUDA), or SOLVER.AMP.ENABLED False.")
        return CPUAMPTrainer(model, data_loader, optimizer, precision=dtype)
    raise ValueError(f"SOLVER.AMP.ENABLED: mixed precision runs on cuda or cpu, not on "
                     f"MODEL.DEVICE {cfg.MODEL.DEVICE!r}.")
