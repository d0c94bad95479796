"""COCO evaluation of SSD models."""
import logging

from detectron2.evaluation import COCOEvaluator

logger = logging.getLogger(__name__)


class SSDCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator that ignores, with a warning, detections of class ids the data set does
    not have (the 80-class MLPerf model on the 3-class shapes set), where COCOEvaluator
    asserts; and evaluates json files without the optional ``"info"`` / ``"licenses"``
    (pycocotools' ``COCO.loadRes`` needs ``dataset["info"]``)."""

    def __init__(self, dataset_name, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        dataset = getattr(getattr(self, "_coco_api", None), "dataset", None)
        if isinstance(dataset, dict):
            dataset.setdefault("info", {})
            dataset.setdefault("licenses", [])

    def process(self, inputs, outputs):
        num_classes = len(self._metadata.get("thing_classes", None) or [])
        if num_classes:
            for out in outputs:
                inst = out.get("instances")
                keep = None if inst is None else inst.pred_classes < num_classes
                if keep is not None and not bool(keep.all()):
                    if not getattr(self, "_warned_classes", False):
                        self._warned_classes = True
                        logger.warning(
                            f"The model predicts class ids >= {num_classes}, but the data set "
                            f"{self._metadata.name} has {num_classes} classes: those detections"
                            " are ignored in its evaluation.")
                    out["instances"] = inst[keep]
        super().process(inputs, outputs)
