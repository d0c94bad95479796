"""MLPerf accuracy records: what the harness writes into LoadGen's ``mlperf_log_accuracy.json``
and how MLPerf's ``accuracy-coco.py`` scores them (mlcommons/inference,
``vision/classification_and_detection/tools/accuracy-coco.py``).

A record is the response data of one query sample: float32 7-tuples, one per detection,
``[qsl_idx, ymin, xmin, ymax, xmax, score, label]``, boxes in [0, 1] of the original image,
``label`` = the category's position in the annotation file's ``categories`` + 1 (the script's
``--use-inv-map`` maps it back through ``[0] + coco.getCatIds()``). An image without
detections answers an empty record. LoadGen writes each response as
``{"seq_id", "qsl_idx", "data": hex bytes}``.

Shapes: M detections.
"""
import contextlib
import io
import json
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..data import mlperf_image_ids

__all__ = ["encode_records", "decode_records", "label_map_for", "load_accuracy_log",
           "score_accuracy_log", "load_coco"]


def encode_records(qsl_idx: int, boxes: np.ndarray, scores: np.ndarray,
                   labels: np.ndarray) -> bytes:
    """One sample's response data.

    Args:
        qsl_idx: LoadGen's sample index.
        boxes: (M, 4) XYXY in [0, 1] of the original image (x1 / W, y1 / H, x2 / W, y2 / H).
        scores: (M,).
        labels: (M,) MLPerf labels (1-based, see :func:`label_map_for`).

    Returns:
        M * 7 float32 values as bytes (empty for M == 0).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    m = len(boxes)
    out = np.empty((m, 7), dtype=np.float32)
    out[:, 0] = qsl_idx
    out[:, 1] = boxes[:, 1]  # ymin
    out[:, 2] = boxes[:, 0]  # xmin
    out[:, 3] = boxes[:, 3]  # ymax
    out[:, 4] = boxes[:, 2]  # xmax
    out[:, 5] = np.asarray(scores, dtype=np.float64).reshape(m)
    out[:, 6] = np.asarray(labels).reshape(m)
    return out.tobytes()


def decode_records(data: bytes) -> np.ndarray:
    """Response data -> (M, 7) float32, as the accuracy script reads it."""
    return np.frombuffer(data, dtype=np.float32).reshape(-1, 7)


def label_map_for(metadata, coco) -> np.ndarray:
    """Detectron2 contiguous class id -> MLPerf label: the position of the class's category in
    the annotation file's ``categories`` + 1, so that ``([0] + coco.getCatIds())[label]`` is
    the category id (the script's ``--use-inv-map``).

    Args:
        metadata: the data set's Detectron2 metadata (``thing_dataset_id_to_contiguous_id``;
            without it, contiguous id i is category ``getCatIds()[i]``).
        coco: ``pycocotools.coco.COCO`` of the annotation file.

    Returns:
        (K,) int64.
    """
    cat_ids = list(coco.getCatIds())
    id_map = metadata.get("thing_dataset_id_to_contiguous_id", None)
    if not id_map:
        return np.arange(1, len(cat_ids) + 1, dtype=np.int64)
    out = np.zeros(max(id_map.values()) + 1, dtype=np.int64)
    for dataset_id, contiguous in id_map.items():
        if dataset_id not in cat_ids:
            raise ValueError(f"Category id {dataset_id} of the data set is not in the "
                             "annotation file's categories: the metadata and json disagree.")
        out[contiguous] = cat_ids.index(dataset_id) + 1
    return out


def load_coco(json_file: str):
    """``pycocotools.coco.COCO`` of ``json_file``, quietly."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


def load_accuracy_log(path: str) -> List[Dict]:
    """LoadGen's ``mlperf_log_accuracy.json``: a list of ``{"seq_id", "qsl_idx", "data"}``."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"No accuracy log {path}: run tools/mlperf_inference.py with "
                                "--mode accuracy first.") from None


def score_accuracy_log(results: Sequence[Dict], coco, use_inv_map: bool = False,
                       remove_empty: bool = False, verbose: bool = False,
                       output_file: Optional[str] = None) -> Dict:
    """Score accuracy records as ``accuracy-coco.py`` does: de-duplicate by ``qsl_idx``
    (the first answer counts), map ``qsl_idx`` to an image through the script's list
    (:func:`~ssd_r34.data.datasets.coco_mlperf.mlperf_image_ids`), scale the boxes by the
    image's size (in float32, as the script), COCOeval bbox on the images seen (those
    without detections included).

    Args:
        results: the parsed accuracy log.
        coco: ``COCO`` of the annotation file.
        use_inv_map: labels -> category ids through ``[0] + coco.getCatIds()``.
        remove_empty: the script's ``--remove-48-empty-images``.
        output_file: where to write the COCO detections json (optional).

    Returns:
        dict: ``mAP`` (a fraction), ``stats`` (COCOeval's 12), ``results``, ``images``,
        ``no_results``, ``dupes``, ``mismatched`` (records whose own index disagrees with
        LoadGen's).
    """
    from pycocotools.cocoeval import COCOeval

    inv_map = [0] + list(coco.getCatIds())
    image_map = [coco.imgs[i] for i in mlperf_image_ids(coco, remove_empty)]
    detections, image_ids, seen = [], set(), set()
    no_results = mismatched = 0
    for j in results:
        idx = j["qsl_idx"]
        if idx in seen:
            continue
        seen.add(idx)
        if idx >= len(image_map):
            raise ValueError(f"qsl_idx {idx} is beyond the {len(image_map)} images of the "
                             "annotation file" + ("" if remove_empty else
                                                  " (was the log made with the empty images "
                                                  "removed? --remove-48-empty-images)"))
        image = image_map[idx]
        data = decode_records(bytes.fromhex(j["data"]))
        image_ids.add(image["id"])
        if len(data) == 0:
            no_results += 1
            continue
        height, width = image["height"], image["width"]
        for image_idx, ymin, xmin, ymax, xmax, score, label in data:
            if int(image_idx) != idx:
                mismatched += 1
            # float32 * int stays float32, as in the script
            ymin, xmin, ymax, xmax = ymin * height, xmin * width, ymax * height, xmax * width
            label = int(label)
            detections.append({"image_id": image["id"],
                               "category_id": inv_map[label] if use_inv_map else label,
                               "bbox": [float(xmin), float(ymin), float(xmax - xmin),
                                        float(ymax - ymin)],
                               "score": float(score)})
    if output_file:
        with open(output_file, "w") as f:
            json.dump(detections, f)
    stats = np.zeros(12)
    if detections:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            coco_dt = coco.loadRes(detections)
            ev = COCOeval(coco, coco_dt, iouType="bbox")
            ev.params.imgIds = list(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        if verbose:
            print(out.getvalue(), end="")
        stats = np.asarray(ev.stats)
    return {"mAP": float(stats[0]), "stats": stats.tolist(), "results": len(results),
            "images": len(image_ids), "no_results": no_results,
            "dupes": len(results) - len(seen), "mismatched": mismatched}
