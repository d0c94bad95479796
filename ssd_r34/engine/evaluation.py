"""COCO evaluation of SSD models."""
import logging

from detectron2.evaluation import COCOEvaluator
from detectron2.utils.logger import log_first_n


class SSDCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator that ignores, with a warning, detections of class ids the data set does
    not have (the 80-class MLPerf model on the 3-class shapes set), where COCOEvaluator
    asserts; and evaluates json files without the optional ``"info"`` / ``"licenses"``
    (pycocotools' ``COCO.loadRes`` needs ``dataset["info"]``)."""

    def __init__(self, dataset_name, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        self._coco_api.dataset.setdefault("info", {})
        self._coco_api.dataset.setdefault("licenses", [])

    def process(self, inputs, outputs):
        num_classes = len(self._metadata.get("thing_classes", None) or [])
        for out in outputs:
            inst = out.get("instances")
            keep = None if inst is None or not num_classes else inst.pred_classes < num_classes
            if keep is not None and not bool(keep.all()):
                log_first_n(logging.WARNING, f"The model predicts class ids >= {num_classes}, but "
                            f"the data set {self._metadata.name} has {num_classes} classes: "
                            "those detections are ignored in its evaluation.", key="message")
                out["instances"] = inst[keep]
        super().process(inputs, outputs)
