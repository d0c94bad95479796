"""The per-step trainer of SSDTrainer: plain, or mixed precision on CUDA (Detectron2's
AMPTrainer, float16 with a GradScaler or bfloat16 without) or on CPU (bfloat16 autocast)."""
import torch

from detectron2.engine import AMPTrainer, SimpleTrainer

__all__ = ["CPUAMPTrainer", "amp_dtype", "build_step_trainer"]

_DTYPES = {"float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def amp_dtype(cfg) -> torch.dtype:
    """SOLVER.AMP.DTYPE as a torch dtype."""
    name = str(cfg.SOLVER.AMP.DTYPE).lower()
    if name not in _DTYPES:
        raise ValueError(f"SOLVER.AMP.DTYPE must be 'float16' or 'bfloat16', got "
                         f"{cfg.SOLVER.AMP.DTYPE!r}.")
    return _DTYPES[name]


class CPUAMPTrainer(SimpleTrainer):
    """Detectron2's AMPTrainer asserts CUDA; this is SimpleTrainer's step under
    ``torch.autocast("cpu", dtype)``. bfloat16 keeps float32's exponent range, so it needs
    no gradient scaling. The backward and the optimizer step inside the autocast region
    compute what they would outside it: autocast casts the inputs of the forward's listed
    ops only (tests/test_amp_eval.py compares the gradients with a forward-only region)."""

    def __init__(self, model, data_loader, optimizer, precision=torch.bfloat16):
        super().__init__(model, data_loader, optimizer)
        self.precision = precision

    def run_step(self):
        with torch.autocast("cpu", dtype=self.precision):
            super().run_step()


def build_step_trainer(cfg, model, data_loader, optimizer):
    """SimpleTrainer, or with SOLVER.AMP.ENABLED: on CUDA Detectron2's AMPTrainer in
    SOLVER.AMP.DTYPE (a GradScaler for float16 only), on CPU :class:`CPUAMPTrainer`
    (bfloat16 only: float16 on CPU is refused with a clear message)."""
    if not cfg.SOLVER.AMP.ENABLED:
        return SimpleTrainer(model, data_loader, optimizer)
    dtype = amp_dtype(cfg)
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
