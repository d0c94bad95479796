"""Training, evaluation and inference machinery: the trainer, its step (plain or mixed
precision), hooks (early stop, data progress, replica check), the COCO evaluator and the
predictor."""
from ..config import setup_cfg
from .defaults import SSDTrainer, create_ddp_model, setup
from .evaluation import SSDCOCOEvaluator
from .hooks import DataProgressHook, EvalAndStopHook, ReplicaCheckHook, weights_digest
from .predictor import SSDPredictor, setup_inference_cfg, test_metadata
from .train_loop import CPUAMPTrainer, amp_dtype, build_step_trainer

__all__ = ["SSDTrainer", "create_ddp_model", "setup", "setup_cfg", "SSDCOCOEvaluator",
           "DataProgressHook", "EvalAndStopHook", "ReplicaCheckHook", "weights_digest",
           "SSDPredictor", "setup_inference_cfg", "test_metadata", "CPUAMPTrainer",
           "amp_dtype", "build_step_trainer"]
