"""Who runs the network (MODEL.SSD.INFERENCE_BACKEND, INFERENCE_DTYPE): PyTorch, or the
exported ONNX network in ONNX Runtime or OpenVINO (:class:`EngineNetwork`, the one place that
opens them); the rest of the model stays ssd_r34's float32 code. docs/int8.md."""
import logging
import os
import tempfile
import warnings
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .network import export_network_onnx
from .quantize import load_calibration, network_digest

logger = logging.getLogger(__name__)

BACKENDS = ("pytorch", "onnxruntime", "openvino")
ENGINE_DTYPES = {"onnxruntime": ("float32", "int8"),
                 "openvino": ("float32", "bfloat16", "int8")}


class EngineNetwork:
    """An exported ONNX (or OpenVINO ``.xml``) model in an inference engine:
    ``net(x) -> tuple of its outputs`` as torch tensors on ``x``'s device.

    Args:
        backend: "onnxruntime" or "openvino".
        path: the model file.
        threads: intra-op threads (0: torch's, one per core; None: the engine's default).
        precision: "float32", "int8" (a quantised file) or, openvino only, "bfloat16".
    """

    def __init__(self, backend: str, path: str, threads: Optional[int] = 0,
                 precision: str = "float32"):
        self.backend, self.path, self.precision = backend, path, precision
        self.threads = None if threads is None else int(threads) if threads > 0 else \
            torch.get_num_threads()
        self.input_shape = None  # onnxruntime: the file's input shape (ints or axis names)
        if backend == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            if self.threads is not None:
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
            self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            self._input, self.input_shape = (self._session.get_inputs()[0].name,
                                             self._session.get_inputs()[0].shape)
        elif backend == "openvino":
            import openvino as ov

            self._core, self._compiled = ov.Core(), {}  # input shape -> infer request
            self._model = self._core.read_model(path)
        else:
            raise ValueError(f"Unknown engine {backend!r}: one of {BACKENDS[1:]}")

    def _openvino_request(self, shape: tuple):
        """One compiled model per input shape (static shapes compile to faster kernels)."""
        if shape not in self._compiled:
            import openvino as ov

            model = self._model.clone()
            model.reshape({model.inputs[0].any_name: ov.PartialShape(list(shape))})
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT":
                      "bf16" if self.precision == "bfloat16" else "f32"}
            if self.threads is not None:
                config["INFERENCE_NUM_THREADS"] = self.threads
            compiled = self._core.compile_model(model, "CPU", config)
            self._compiled[shape] = compiled.create_infer_request()
        return self._compiled[shape]

    def __call__(self, x: Tensor) -> Tuple[Tensor, ...]:
        """E.g. normalised (N, 3, H, W) images -> loc (N, R, 4), conf (N, R, K+1)."""
        a = x.detach().cpu().contiguous()
        a = (a.float() if a.is_floating_point() else a).numpy()
        if self.backend == "onnxruntime":
            outs = self._session.run(None, {self._input: a})
        else:
            request = self._openvino_request(tuple(a.shape))
            request.infer({0: a})
            outs = [request.get_output_tensor(i).data for i in range(len(request.model_outputs))]
        return tuple(torch.from_numpy(np.array(o, copy=True)).to(x.device) for o in outs)

    def __repr__(self):
        return f"EngineNetwork({self.backend}, {self.precision}, {os.path.basename(self.path)})"


def load_exported(fmt: str, path: str):
    """An exported model (``fmt`` "torchscript" or "onnx", onnxruntime on CPU) as
    ``runner(image) -> (boxes, scores, classes)``."""
    if fmt == "onnx":
        return EngineNetwork("onnxruntime", path, threads=None)
    if fmt != "torchscript":
        raise ValueError(f"Unknown export format {fmt!r}")
    with warnings.catch_warnings():  # torch.jit's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(path, map_location="cpu").eval()
    return torch.no_grad()(lambda image: tuple(model(image)))


def attach_backend(model: nn.Module, cfg) -> nn.Module:
    """Give ``model`` (an SSD, weights loaded) the engine of MODEL.SSD.INFERENCE_BACKEND and
    INFERENCE_DTYPE ("pytorch": none): the network exported now, or for INT8
    MODEL.SSD.INT8.CALIBRATION_DIR's, refused when made for another backend, input size or
    other weights.

    Returns:
        ``model``, in eval mode, its ``network_runner`` set (or None).
    """
    ssd = cfg.MODEL.SSD
    backend, dtype = ssd.INFERENCE_BACKEND, ssd.INFERENCE_DTYPE
    if backend not in BACKENDS:
        raise ValueError(f"MODEL.SSD.INFERENCE_BACKEND must be one of {BACKENDS}, got "
                         f"{backend!r}.")
    model.eval()
    model.network_runner = None
    if backend == "pytorch":
        return model
    if dtype not in ENGINE_DTYPES[backend]:
        raise ValueError(f"MODEL.SSD.INFERENCE_DTYPE {dtype!r} is not offered with {backend}: "
                         f"one of {ENGINE_DTYPES[backend]}.")
    if dtype == "int8":
        folder = ssd.INT8.CALIBRATION_DIR
        if not folder:
            raise ValueError("MODEL.SSD.INFERENCE_DTYPE int8 needs a calibration: run "
                             "tools/calibrate.py and set MODEL.SSD.INT8.CALIBRATION_DIR to its "
                             "--output folder.")
        meta = load_calibration(folder)
        problems = []
        if meta["backend"] != backend:
            problems.append(f"it was made for {meta['backend']}, not {backend}")
        if tuple(meta["input_size"]) != tuple(model.input_size):
            problems.append(f"input size {meta['input_size']} != {list(model.input_size)}")
        if meta["weights_digest"] != network_digest(model):
            problems.append("the weights differ from those it was calibrated with")
        if problems:
            raise ValueError(f"INT8 calibration {folder!r} does not fit this model: "
                             f"{'; '.join(problems)}. Run tools/calibrate.py again with this "
                             "config and MODEL.WEIGHTS.")
        net = EngineNetwork(backend, os.path.join(folder, meta["model_file"]),
                            ssd.BACKEND_THREADS, "int8")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ssd_r34_network_")  # removed with ``net``
        net = EngineNetwork(backend, export_network_onnx(
            model, os.path.join(tmp.name, "network.onnx")), ssd.BACKEND_THREADS, dtype)
        net._tmp = tmp
    model.network_runner = net
    logger.info("Network runs in %s", net)
    return model
