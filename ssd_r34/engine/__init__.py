"""Training, evaluation and inference: trainer, training step, hooks, evaluator, predictor."""
from .defaults import SSDTrainer, create_ddp_model, setup  # noqa: F401
from .evaluation import SSDCOCOEvaluator  # noqa: F401
from .hooks import DataProgressHook, EvalAndStopHook, ReplicaCheckHook  # noqa: F401
from .predictor import SSDPredictor, setup_inference_cfg, test_metadata  # noqa: F401
