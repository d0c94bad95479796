"""Parameters, FLOPs and activations of an SSD model at its INPUT.FIXED_SIZE, counted by
fvcore as Detectron2's ``tools/analyze_model.py`` does (docs/tools.md says what is counted)."""
from typing import Dict, Sequence

import torch
from torch import nn

from detectron2.modeling import build_model
from fvcore.nn import (ActivationCountAnalysis, FlopCountAnalysis, flop_count_table,
                       parameter_count, parameter_count_table)

__all__ = ["analyze_model"]


class _Network(nn.Module):
    """Normalised images (N, 3, H, W) -> (loc, conf) of every default box."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        loc, conf, _ = self.model.forward_network(images)
        return loc, conf


def analyze_model(cfg, tasks: Sequence[str] = ("parameter", "flop", "activation"),
                  depth: int = 2) -> Dict:
    """Build the model of ``cfg`` (on its MODEL.DEVICE; use cpu) and count ``tasks`` (any
    of "parameter", "flop", "activation"; ``depth``: of fvcore's tables).

    Returns:
        dict with "input" ("HxW"), "strides", "boxes" (default boxes R), and per task:
        "parameters" + "parameter_table"; "gflops", "gflops_by_operator", "flop_table";
        "mactivations".
    """
    model = build_model(cfg).eval()
    H, W = model.input_size
    x = torch.zeros(1, 3, H, W)
    out = {"input": f"{H}x{W}", "strides": list(cfg.MODEL.SSD.STRIDES),
           "boxes": model.num_boxes()}
    net = _Network(model).eval()
    if "parameter" in tasks:
        out["parameters"] = parameter_count(model)[""]
        out["parameter_table"] = parameter_count_table(model, max_depth=depth)

    def count(analysis_cls):
        with torch.no_grad():
            analysis = analysis_cls(net, (x,))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.total()  # runs the trace once, quietly
        return analysis

    if "flop" in tasks:
        flops = count(FlopCountAnalysis)
        out["gflops"] = flops.total() / 1e9
        out["gflops_by_operator"] = {k: v / 1e9 for k, v in flops.by_operator().items()}
        out["flop_table"] = flop_count_table(flops, max_depth=depth)
    if "activation" in tasks:
        out["mactivations"] = count(ActivationCountAnalysis).total() / 1e6
    return out
