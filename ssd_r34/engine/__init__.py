"""Training, evaluation and inference machinery: the trainer, its step, hooks, the COCO
evaluator and the predictor."""
from .defaults import SSDTrainer, create_ddp_model, setup
from .evaluation import SSDCOCOEvaluator
from .hooks import DataProgressHook, EvalAndStopHook, ReplicaCheckHook
from .predictor import SSDPredictor, setup_inference_cfg, test_metadata
