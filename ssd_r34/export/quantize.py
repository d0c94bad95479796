"""INT8 by post-training static quantisation, made once (:func:`calibrate`,
tools/calibrate.py) into a folder (MODEL.SSD.INT8.CALIBRATION_DIR) with ``calibration.json``.
Routes: onnxruntime's ``quantize_static`` (QDQ) and NNCF's ``nncf.quantize``; docs/int8.md."""
import hashlib
import json
import os
import re
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from detectron2.data import DatasetCatalog

from ..data import SSDDatasetMapper
from .network import export_network_onnx

METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
CALIBRATION_FILE = "calibration.json"
INT8_FILES = {"onnxruntime": "network_int8.onnx", "openvino": "network_int8.xml"}


def network_digest(model: nn.Module) -> str:
    """SHA-256 of the weights and buffers (names, shapes, values) and input size."""
    h = hashlib.sha256(repr(tuple(model.input_size)).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def calibration_images(cfg, dataset: str = "", num_images: int = 0) -> Tuple[Tensor, List[str]]:
    """The calibration batch: the first ``num_images`` images of a registered data set
    through the test pre-processing, normalised with PIXEL_MEAN / PIXEL_STD.

    Args:
        cfg: the config.
        dataset: a registered data set ("": MODEL.SSD.INT8.CALIBRATION_DATASET, else
            DATASETS.TRAIN[0]).
        num_images: how many (0: MODEL.SSD.INT8.CALIBRATION_IMAGES).

    Returns:
        (num_images, 3, H, W) float32 and the file names used (list of str).
    """
    name = dataset or cfg.MODEL.SSD.INT8.CALIBRATION_DATASET or (
        cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else "")
    if not name:
        raise ValueError("No calibration data set: set MODEL.SSD.INT8.CALIBRATION_DATASET (or "
                         "DATASETS.TRAIN) to a registered data set.")
    n = int(num_images or cfg.MODEL.SSD.INT8.CALIBRATION_IMAGES)
    dicts = DatasetCatalog.get(name)
    if not 0 < n <= len(dicts):
        raise ValueError(f"MODEL.SSD.INT8.CALIBRATION_IMAGES is {n}: set it from 1 to "
                         f"{len(dicts)}, the number of images of {name!r}.")
    dicts = dicts[:n]
    mapper = SSDDatasetMapper(cfg, is_train=False)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD))
    images = torch.stack([(mapper(dict(d))["image"].float() - mean) / std for d in dicts])
    return images, [d["file_name"] for d in dicts]


def _module_of(node_name: str) -> str:
    """The SSD module of an exported node: "/backbone/res2/res2.0/conv1/Conv" ->
    "backbone.res2.0.conv1" (the exporter repeats a container's name in its children's)."""
    path: List[str] = []
    for part in node_name.strip("/").split("/")[:-1]:
        path.append(part[len(path[-1]) + 1:] if path and part.startswith(path[-1] + ".")
                    else part)
    return ".".join(path)


def _float_nodes(onnx_path: str, float_layers: Sequence[str]) -> List[str]:
    """Names of the nodes of ``onnx_path`` inside the SSD modules ``float_layers`` (names or
    their prefixes, e.g. "head"); a name that matches no node is refused."""
    import onnx

    names = [n.name for n in onnx.load(onnx_path).graph.node] if float_layers else []
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
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):  # the batch, one image at a time
        def __init__(self):
            self.items = iter([{"images": im[None].numpy()} for im in images])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        # onnxruntime's recommended pre-processing: shape inference and graph optimisation
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        quantize_static(prepared, out_path, Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel,
                        calibrate_method=CalibrationMethod[METHODS[method]],
                        # Not the output Concat / Reshape: one 8-bit scale for every class
                        # logit would lower the AP (docs/int8.md).
                        op_types_to_quantize=["Conv", "Add", "MaxPool"],
                        nodes_to_exclude=_float_nodes(prepared, float_layers),
                        extra_options={"CalibTensorRangeSymmetric": False})
    return {i.name: onnx.numpy_helper.to_array(i).astype(np.float64).ravel().tolist()
            for i in onnx.load(out_path).graph.initializer if i.name.endswith("_scale")}


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
    # an OpenVINO op is named after its ONNX node, maybe with a suffix
    ignored = nncf.IgnoredScope(patterns=["^" + re.escape(n) + "(/.*)?$"
                                          for n in _float_nodes(float_path, float_layers)],
                                validate=False)
    quantized = nncf.quantize(ov.Core().read_model(float_path),
                              nncf.Dataset([im[None].numpy() for im in images]),
                              subset_size=len(images), preset=nncf.QuantizationPreset.PERFORMANCE,
                              fast_bias_correction=True, ignored_scope=ignored)
    ov.save_model(quantized, out_path, compress_to_fp16=False)
    ranges = {}  # FakeQuantize: input high - input low
    for op in (o for o in quantized.get_ordered_ops() if o.get_type_name() == "FakeQuantize"):
        lo, hi = (np.asarray(op.input_value(i).get_node().get_data(), np.float64) for i in (1, 2))
        ranges[op.get_friendly_name()] = (hi - lo).ravel().tolist()
    return ranges


def calibrate(model: nn.Module, images: Tensor, out_dir: str, backend: str,
              per_channel: bool = True, method: str = "minmax",
              image_names: Sequence[str] = (), float_layers: Sequence[str] = ()) -> Dict:
    """Post-training static INT8 quantisation of ``model``'s network, saved in ``out_dir``
    (the float32 ONNX network, the quantised model, ``calibration.json``).

    Args:
        model: a built SSD in eval mode with its weights.
        images: (N, 3, H, W) normalised calibration images (:func:`calibration_images`).
        out_dir, backend: the folder to write; "onnxruntime" or "openvino".
        per_channel, method, float_layers: MODEL.SSD.INT8.PER_CHANNEL, METHOD, FLOAT_LAYERS.
        image_names: recorded in calibration.json.

    Returns:
        The contents of calibration.json (``scales``: name -> quantisation scales, or for
        openvino FakeQuantize ranges).
    """
    if backend not in INT8_FILES:
        raise ValueError(f"INT8 calibration needs MODEL.SSD.INFERENCE_BACKEND onnxruntime or "
                         f"openvino, got {backend!r}.")
    if method not in METHODS:
        raise ValueError(f"MODEL.SSD.INT8.METHOD must be one of {tuple(METHODS)}, got {method!r}.")
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
    with open(os.path.join(out_dir, CALIBRATION_FILE + ".tmp"), "w") as f:
        json.dump(meta, f)
    os.replace(f.name, os.path.join(out_dir, CALIBRATION_FILE))
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
