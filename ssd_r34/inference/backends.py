"""The network (backbone + heads) in another inference engine, float32 or INT8.

``MODEL.SSD.INFERENCE_BACKEND`` chooses who runs the network: "pytorch" (ssd_r34 itself),
"onnxruntime" or "openvino". With an engine, :func:`attach_backend` exports the network alone
(normalised images -> loc, conf; :func:`export_network_onnx`) and gives the SSD an
:class:`EngineNetwork` that :meth:`SSD.forward_network` calls instead of the PyTorch network;
everything else (normalisation, default boxes, decoding, softmax, NMS, rescaling to the
original image) is ssd_r34's own code in float32, so the outputs are the usual
``Instances`` and every tool (SSDPredictor, ``train_net.py --eval-only``, demo) works as it is.

``MODEL.SSD.INFERENCE_DTYPE int8`` runs the network quantised: post-training static
quantisation (8-bit weights per output channel, 8-bit activations with scales measured on
calibration images), made once by :func:`calibrate` (``tools/calibrate.py``) and saved in a
folder (``MODEL.SSD.INT8.CALIBRATION_DIR``) with ``calibration.json``: the backend, a digest
of the weights it was made for, the images used and every quantisation scale. The routes:

* onnxruntime: ``onnxruntime.quantization.quantize_static`` (QDQ format, unsigned 8-bit
  activations, signed 8-bit weights; convolutions, additions and pooling, not the Concat /
  Reshape of the outputs), calibration method ``MODEL.SSD.INT8.METHOD``;
* openvino: NNCF's ``nncf.quantize`` on the OpenVINO model (FakeQuantize, min-max ranges of
  the calibration images, fast bias correction).

docs/int8.md measures both and the PyTorch paths side by side.
"""
import hashlib
import json
import logging
import os
import re
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "ENGINE_DTYPES", "EngineNetwork", "export_network_onnx",
           "network_digest", "calibration_images", "calibrate", "load_calibration",
           "attach_backend", "reproduced_detections"]

BACKENDS = ("pytorch", "onnxruntime", "openvino")
ENGINE_DTYPES = {"onnxruntime": ("float32", "int8"),
                 "openvino": ("float32", "bfloat16", "int8")}
METHODS = ("minmax", "percentile", "entropy")
CALIBRATION_FILE = "calibration.json"
INT8_FILES = {"onnxruntime": "network_int8.onnx", "openvino": "network_int8.xml"}
INPUT_NAME = "images"
OUTPUT_NAMES = ["loc", "conf"]


class _Network(nn.Module):
    """Normalised (N, 3, H, W) images -> loc (N, R, 4), conf (N, R, K+1): the part of
    :meth:`SSD.forward_network` an engine runs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        loc, conf, _ = self.model.forward_network(images)
        return loc, conf


def export_network_onnx(model: nn.Module, path: str, opset: int = 17) -> str:
    """Export the network of an SSD in eval mode to ONNX at ``path``.

    Args:
        model: a built SSD (eval mode, weights loaded). Exported in float32 whatever its
            INFERENCE_DTYPE; the BatchNorms are folded into the convolutions by the exporter.
        path: the ``.onnx`` file to write.
        opset: ONNX opset.

    Returns:
        ``path``. The graph takes ``images`` (N, 3, H, W) float32, normalised with the
        model's PIXEL_MEAN / PIXEL_STD, H x W = INPUT.FIXED_SIZE, any N, and returns ``loc``
        (N, R, 4) and ``conf`` (N, R, K+1) as :meth:`SSD.forward_network`.
    """
    if model.training:
        raise ValueError("Export a model in eval mode (model.eval()).")
    import warnings

    H, W = model.input_size
    example = torch.zeros(1, 3, H, W)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    dtype = model.inference_dtype
    model.inference_dtype = None  # the exported graph is float32; the engine quantises
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Network(model).eval(), (example,), path, input_names=[INPUT_NAME],
                output_names=OUTPUT_NAMES, opset_version=opset, dynamo=False,
                do_constant_folding=True,
                dynamic_axes={INPUT_NAME: {0: "batch"}, "loc": {0: "batch"},
                              "conf": {0: "batch"}})
    finally:
        model.inference_dtype = dtype
    return path


def network_digest(model: nn.Module) -> str:
    """SHA-256 of the network's weights and buffers (names, shapes, values) and input size:
    what a calibration was made for."""
    h = hashlib.sha256(repr(tuple(model.input_size)).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _threads(threads: int) -> int:
    return int(threads) if threads and threads > 0 else torch.get_num_threads()


class EngineNetwork:
    """An exported network in an inference engine: ``net(images) -> (loc, conf)``.

    Args:
        backend: "onnxruntime" or "openvino".
        path: the model file (``.onnx``; for openvino also ``.xml``).
        threads: intra-op threads (0: torch's, one per core).
        precision: "float32", "int8" (a quantised file) or, openvino only, "bfloat16"
            (``INFERENCE_PRECISION_HINT``; needs a CPU with bf16 instructions).
    """

    def __init__(self, backend: str, path: str, threads: int = 0, precision: str = "float32"):
        self.backend = backend
        self.path = path
        self.precision = precision
        self.threads = _threads(threads)
        self._tmp = None  # a TemporaryDirectory holding ``path``, removed with this object
        if backend == "onnxruntime":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        elif backend == "openvino":
            import openvino as ov

            self._core = ov.Core()
            self._model = self._core.read_model(path)
            self._compiled: Dict[tuple, object] = {}
        else:
            raise ValueError(f"Unknown engine {backend!r}: one of {BACKENDS[1:]}")

    def _openvino_request(self, shape: tuple):
        """One compiled model per input shape (static shapes compile to faster kernels)."""
        if shape not in self._compiled:
            import openvino as ov

            model = self._model.clone()
            model.reshape({model.inputs[0].any_name: ov.PartialShape(list(shape))})
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads,
                      "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bfloat16"
                      else "f32"}
            compiled = self._core.compile_model(model, "CPU", config)
            self._compiled[shape] = compiled.create_infer_request()
        return self._compiled[shape]

    def __call__(self, images: Tensor) -> Tuple[Tensor, Tensor]:
        """Normalised (N, 3, H, W) float32 images -> loc (N, R, 4), conf (N, R, K+1)."""
        x = images.detach().float().cpu().contiguous().numpy()
        if self.backend == "onnxruntime":
            loc, conf = self._session.run(OUTPUT_NAMES, {INPUT_NAME: x})
        else:
            request = self._openvino_request(tuple(x.shape))
            request.infer({0: x})
            loc, conf = (request.get_output_tensor(i).data for i in range(2))
        return (torch.from_numpy(np.array(loc, copy=True)).to(images.device),
                torch.from_numpy(np.array(conf, copy=True)).to(images.device))

    def __repr__(self):
        return f"EngineNetwork({self.backend}, {self.precision}, {os.path.basename(self.path)})"


def calibration_images(cfg, dataset: str = "", num_images: int = 0) -> Tuple[Tensor, List[str]]:
    """The calibration batch: the first ``num_images`` images of a registered data set,
    through the test pre-processing (resize to INPUT.FIXED_SIZE, INPUT.FORMAT order) and
    normalised with PIXEL_MEAN / PIXEL_STD. Always the same images for the same arguments.

    Args:
        cfg: the config (INPUT.*, MODEL.PIXEL_*; ``MODEL.SSD.INT8.CALIBRATION_DATASET`` /
            ``CALIBRATION_IMAGES`` when the arguments are not given).
        dataset: a registered data set name ("": the key, else DATASETS.TRAIN[0]).
        num_images: how many (0: ``MODEL.SSD.INT8.CALIBRATION_IMAGES``).

    Returns:
        (num_images, 3, H, W) float32 and the file names used (list of str).
    """
    from detectron2.data import DatasetCatalog

    from ..data import SSDDatasetMapper, ensure_dataset

    name = dataset or cfg.MODEL.SSD.INT8.CALIBRATION_DATASET or (
        cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else "")
    if not name:
        raise ValueError("No calibration data set: set MODEL.SSD.INT8.CALIBRATION_DATASET (or "
                         "DATASETS.TRAIN) to a registered data set.")
    n = int(num_images or cfg.MODEL.SSD.INT8.CALIBRATION_IMAGES)
    if n <= 0:
        raise ValueError(f"MODEL.SSD.INT8.CALIBRATION_IMAGES must be > 0, got {n}.")
    ensure_dataset(name)
    dicts = DatasetCatalog.get(name)[:n]
    if len(dicts) < n:
        raise ValueError(f"Data set {name!r} has {len(dicts)} images, fewer than the {n} asked "
                         "for (MODEL.SSD.INT8.CALIBRATION_IMAGES).")
    mapper = SSDDatasetMapper(cfg, is_train=False)
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    images = torch.stack([(mapper(dict(d))["image"].float() - mean) / std for d in dicts])
    return images, [d["file_name"] for d in dicts]


class _Reader:
    """onnxruntime's CalibrationDataReader over a (N, 3, H, W) batch, one image at a time."""

    def __init__(self, images: Tensor):
        self._items = [{INPUT_NAME: im[None].numpy()} for im in images]
        self._it = iter(self._items)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self._items)


def _module_of(node_name: str) -> str:
    """The SSD module an exported node belongs to: "/backbone/res2/res2.0/conv1/Conv" ->
    "backbone.res2.0.conv1", "/head/loc.0/Conv" -> "head.loc.0" (the exporter repeats a
    container's name in its children's scopes)."""
    path: List[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        path.append(part[len(path[-1]) + 1:] if path and part.startswith(path[-1] + ".")
                    else part)
    return ".".join(path)


def _float_nodes(onnx_path: str, float_layers: Sequence[str]) -> List[str]:
    """Names of the nodes of ``onnx_path`` inside the SSD modules ``float_layers`` (module
    names or their prefixes, e.g. "head", "backbone.stem"); a name that matches no node is
    refused."""
    import onnx

    names = [n.name for n in onnx.load(onnx_path).graph.node]
    found = []
    for layer in float_layers:
        hits = [n for n in names if (_module_of(n) + ".").startswith(layer + ".")]
        if not hits:
            raise ValueError(f"MODEL.SSD.INT8.FLOAT_LAYERS: {layer!r} names no layer of the "
                             "network; use SSD module names such as 'head', 'backbone.stem'.")
        found += hits
    return found


def _onnxruntime_int8(float_path: str, out_path: str, images: Tensor, per_channel: bool,
                      method: str, float_layers: Sequence[str] = ()) -> Dict[str, List[float]]:
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)

    class Reader(_Reader, CalibrationDataReader):
        pass

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:  # onnxruntime writes its augmented model here
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            # onnxruntime's recommended pre-processing: shape inference and graph
            # optimisation (constant biases of the folded convolutions).
            prepared = os.path.join(tmp, "prepared.onnx")
            quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
            excluded = _float_nodes(prepared, float_layers) if float_layers else []
            quantize_static(prepared, out_path, Reader(images), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=per_channel, calibrate_method=methods[method],
                            # Convolutions, residual additions and pooling only: quantising
                            # the Concat / Reshape of the outputs too puts every class logit
                            # under one 8-bit scale (AP 10.0 instead of 16.6, docs/int8.md).
                            op_types_to_quantize=["Conv", "Add", "MaxPool"],
                            nodes_to_exclude=excluded,
                            extra_options={"CalibTensorRangeSymmetric": False})
        finally:
            os.chdir(cwd)
    import onnx
    from onnx import numpy_helper

    q = onnx.load(out_path)
    return {i.name: numpy_helper.to_array(i).astype(np.float64).ravel().tolist()
            for i in q.graph.initializer if i.name.endswith("_scale")}


def _openvino_int8(float_path: str, out_path: str, images: Tensor, per_channel: bool,
                   method: str, float_layers: Sequence[str] = ()) -> Dict[str, List[float]]:
    import nncf
    import openvino as ov

    if method != "minmax":
        raise ValueError(f"MODEL.SSD.INT8.METHOD {method!r} is not offered with openvino "
                         "(NNCF's min-max ranges): use minmax.")
    if not per_channel:
        raise ValueError("NNCF quantises weights per channel: MODEL.SSD.INT8.PER_CHANNEL must be "
                         "True with openvino.")
    model = ov.Core().read_model(float_path)
    data = nncf.Dataset([im[None].numpy() for im in images])
    ignored = None
    if float_layers:
        # OpenVINO names an op after the ONNX node it comes from ("/head/loc.0/Conv", with
        # suffixes such as "/WithoutBiases").
        ignored = nncf.IgnoredScope(
            patterns=["^" + re.escape(n) + "(/.*)?$" for n in _float_nodes(float_path,
                                                                             float_layers)],
            validate=False)
    quantized = nncf.quantize(model, data, subset_size=len(images),
                              preset=nncf.QuantizationPreset.PERFORMANCE,
                              fast_bias_correction=True,
                              **({"ignored_scope": ignored} if ignored else {}))
    ov.save_model(quantized, out_path, compress_to_fp16=False)
    scales = {}
    for op in quantized.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            lo, hi = (op.input_value(i).get_node().get_data() for i in (1, 2))
            scales[op.get_friendly_name()] = (np.asarray(hi, np.float64)
                                              - np.asarray(lo, np.float64)).ravel().tolist()
    return scales


def calibrate(model: nn.Module, images: Tensor, out_dir: str, backend: str,
              per_channel: bool = True, method: str = "minmax",
              image_names: Sequence[str] = (), float_layers: Sequence[str] = ()) -> Dict:
    """Post-training static INT8 quantisation of ``model``'s network, saved in ``out_dir``.

    Args:
        model: a built SSD in eval mode with its weights.
        images: (N, 3, H, W) normalised calibration images (:func:`calibration_images`).
        out_dir: folder to write: the float32 ONNX network, the quantised model
            (``network_int8.onnx`` or ``network_int8.xml`` / ``.bin``) and ``calibration.json``.
        backend: "onnxruntime" or "openvino".
        per_channel: weights quantised per output channel (else per tensor; onnxruntime).
        method: activation ranges: "minmax"; onnxruntime also "percentile", "entropy".
        image_names: recorded in calibration.json.
        float_layers: SSD module names whose layers stay float32 (e.g. "head",
            "backbone.stem"; ``MODEL.SSD.INT8.FLOAT_LAYERS``).

    Returns:
        The contents of calibration.json (``scales``: name -> quantisation scales, or for
        openvino FakeQuantize ranges).
    """
    if backend not in INT8_FILES:
        raise ValueError(f"INT8 calibration needs MODEL.SSD.INFERENCE_BACKEND onnxruntime or "
                         f"openvino, got {backend!r}.")
    if method not in METHODS:
        raise ValueError(f"MODEL.SSD.INT8.METHOD must be one of {METHODS}, got {method!r}.")
    if images.ndim != 4 or tuple(images.shape[-2:]) != tuple(model.input_size):
        raise ValueError(f"Calibration images must be (N, 3, {model.input_size[0]}, "
                         f"{model.input_size[1]}), got {tuple(images.shape)}.")
    os.makedirs(out_dir, exist_ok=True)
    float_path = export_network_onnx(model, os.path.join(out_dir, "network_float32.onnx"))
    out_path = os.path.join(out_dir, INT8_FILES[backend])
    route = _onnxruntime_int8 if backend == "onnxruntime" else _openvino_int8
    scales = route(float_path, out_path, images.float().cpu(), per_channel, method,
                   tuple(float_layers))
    meta = {"backend": backend, "model_file": INT8_FILES[backend],
            "weights_digest": network_digest(model), "input_size": list(model.input_size),
            "num_images": int(len(images)), "images": list(image_names),
            "per_channel": bool(per_channel), "method": method,
            "float_layers": list(float_layers), "scales": scales}
    tmp = os.path.join(out_dir, CALIBRATION_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(meta, f)
    os.replace(tmp, os.path.join(out_dir, CALIBRATION_FILE))
    return meta


def load_calibration(out_dir: str) -> Dict:
    """Read ``calibration.json`` of a :func:`calibrate` folder (clear errors when absent)."""
    path = os.path.join(out_dir, CALIBRATION_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No INT8 calibration in {out_dir!r} ({CALIBRATION_FILE} missing): run "
            "tools/calibrate.py with this config and set MODEL.SSD.INT8.CALIBRATION_DIR to its "
            "--output folder.")
    with open(path) as f:
        return json.load(f)


def reproduced_detections(ours: Sequence, reference: Sequence, iou: float = 0.9,
                          score_difference: bool = False) -> Tuple:
    """How many of ``reference``'s detections ``ours`` reproduces: same class and box IoU >=
    ``iou``, each of ours used once, reference detections in score order (the INT8 vs
    float32 agreement of docs/int8.md).

    Args:
        ours, reference: lists of Instances (pred_boxes, scores, pred_classes), per image.
        iou: the IoU a reproduced box needs.
        score_difference: also return the largest score difference of a reproduced pair.

    Returns:
        (reproduced, total reference detections), plus that largest score difference (float)
        with ``score_difference``.
    """
    from detectron2.structures import pairwise_iou

    matched = total = 0
    dscore = 0.0
    for a, b in zip(ours, reference):
        total += len(b)
        if not len(a) or not len(b):
            continue
        ious = pairwise_iou(a.pred_boxes, b.pred_boxes)
        ious[a.pred_classes[:, None] != b.pred_classes[None, :]] = 0
        used = torch.zeros(len(a), dtype=torch.bool)
        for j in b.scores.argsort(descending=True).tolist():
            cand = ious[:, j].masked_fill(used, 0)
            i = int(cand.argmax())
            if cand[i] >= iou:
                used[i] = True
                matched += 1
                dscore = max(dscore, abs(float(a.scores[i]) - float(b.scores[j])))
    return (matched, total, dscore) if score_difference else (matched, total)


def attach_backend(model: nn.Module, cfg, check_digest: bool = True) -> nn.Module:
    """Give ``model`` (an SSD with its weights loaded) the engine chosen by
    MODEL.SSD.INFERENCE_BACKEND and INFERENCE_DTYPE; "pytorch" removes any engine.

    Float32 (and openvino bfloat16): the network is exported now into a temporary folder.
    INT8: the calibrated model of MODEL.SSD.INT8.CALIBRATION_DIR, refused when it was made
    for another backend, input size or other weights (``check_digest``).

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
    threads = ssd.BACKEND_THREADS
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
        if check_digest and meta["weights_digest"] != network_digest(model):
            problems.append("the weights differ from those it was calibrated with")
        if problems:
            raise ValueError(f"INT8 calibration {folder!r} does not fit this model: "
                             f"{'; '.join(problems)}. Run tools/calibrate.py again with this "
                             "config and MODEL.WEIGHTS.")
        net = EngineNetwork(backend, os.path.join(folder, meta["model_file"]), threads, "int8")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="ssd_r34_network_")
        path = export_network_onnx(model, os.path.join(tmp.name, "network.onnx"))
        net = EngineNetwork(backend, path, threads, dtype)
        net._tmp = tmp
    model.network_runner = net
    logger.info("Network runs in %s", net)
    return model
