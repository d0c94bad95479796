"""MLPerf inference on LoadGen (``mlcommons-loadgen``): a query sample library, a system
under test over a backend, and the accuracy records of MLPerf's ``accuracy-coco.py`` with its
scoring re-implemented. docs/mlperf_inference.md. Shapes: N images, M detections."""
import contextlib
import io
import json
import logging
import os
import queue
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..data import SSDDatasetMapper, ensure_shapes, mlperf_image_ids
from ..export import BACKENDS, EngineNetwork, SSDMLPerfExportModule, export_onnx
from .predictor import SSDPredictor

logger = logging.getLogger(__name__)

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
MODES = ("performance", "accuracy")


class DatasetQSL:
    """Query sample library: sample i is image i of the accuracy script's list of
    ``dataset_name`` (with a COCO ``json_file``), the first ``count`` (None: all), loaded by
    ``cfg``'s evaluation mapper; ``performance_sample_count`` default min(count, 64)."""

    def __init__(self, cfg, dataset_name: str, count: Optional[int] = None,
                 performance_sample_count: Optional[int] = None):
        ensure_shapes(dataset_name)  # the json file is read below, before any get
        meta = MetadataCatalog.get(dataset_name)
        self.json_file = meta.get("json_file", None)
        if not self.json_file:
            raise ValueError(f"The data set {dataset_name!r} has no json_file in its metadata: "
                             "the MLPerf harness needs a COCO-format data set.")
        self.coco = load_coco(self.json_file)
        self.remove_empty = bool(meta.get("mlperf_remove_empty_images", False))
        order = mlperf_image_ids(self.coco, self.remove_empty)
        by_id = {d["image_id"]: d for d in DatasetCatalog.get(dataset_name)}
        missing = [i for i in order if i not in by_id]
        if missing:
            raise ValueError(
                f"{dataset_name}: {len(missing)} image(s) of {self.json_file} are not in the "
                f"data set (e.g. id {missing[0]}): MLPerf's accuracy script indexes the "
                "annotation file's images, so the data set must hold them all.")
        self.dicts = [by_id[i] for i in order][:count]
        self.label_map = label_map_for(meta, self.coco)
        self.mapper = SSDDatasetMapper(cfg, is_train=False)
        self.count = len(self.dicts)
        if self.count == 0:
            raise ValueError(f"{dataset_name} holds no image.")
        self.performance_sample_count = min(self.count, performance_sample_count or 64)
        self.samples: Dict[int, Dict] = {}

    def load_samples(self, indices: List[int]) -> None:
        for i in (i for i in indices if i not in self.samples):
            self.samples[i] = self.mapper(self.dicts[i])  # without annotations

    def unload_samples(self, indices: List[int]) -> None:
        for i in indices:
            self.samples.pop(i, None)

    def get(self, index: int) -> Dict:
        return self.samples[index]  # LoadGen loads a sample before querying it

    def records(self, index: int, detections) -> bytes:
        boxes, scores, classes = detections
        keep = classes < len(self.label_map)  # a model with more classes than the data set
        return encode_records(index, boxes[keep], scores[keep], self.label_map[classes[keep]])


class SUT:
    """System under test: ``threads`` workers run ``backend`` on queued batches (Offline:
    ``batch_size`` samples; else one call's) and answer each sample with its accuracy records.
    A sample is lost if still ``pending`` at the end, answered twice if answered while not
    pending (LoadGen reuses a response id only after its answer)."""

    def __init__(self, backend, qsl: DatasetQSL, scenario: str, batch_size: int = 1,
                 threads: int = 1):
        self.backend, self.qsl, self.scenario = backend, qsl, scenario
        self.batch_size = max(1, int(batch_size))
        self.queue: "queue.Queue" = queue.Queue()
        self.issued = self.answered = self.issued_twice = 0
        self.pending: Dict[int, int] = {}
        self.answered_twice: List[int] = []
        self.errors: List[BaseException] = []
        self._lock = threading.Lock()
        self.workers = [threading.Thread(target=self._work, daemon=True, name=f"sut-{i}")
                        for i in range(max(1, int(threads)))]
        for w in self.workers:
            w.start()

    def issue_queries(self, query_samples) -> None:
        samples = list(query_samples)
        with self._lock:
            self.issued += len(samples)
            self.issued_twice += sum(q.id in self.pending for q in samples)
            self.pending.update((q.id, q.index) for q in samples)
        step = self.batch_size if self.scenario == "Offline" else max(1, len(samples))
        for i in range(0, len(samples), step):
            self.queue.put(samples[i:i + step])

    def _work(self) -> None:
        import mlperf_loadgen as lg

        for batch in iter(self.queue.get, None):
            try:
                dets = self.backend.predict([self.qsl.get(s.index) for s in batch])
                payloads = [np.frombuffer(self.qsl.records(s.index, d), dtype=np.uint8)
                            for s, d in zip(batch, dets)]
            except BaseException as e:  # answer anyway: LoadGen would wait forever
                logger.exception("The backend failed on a batch; answering it empty.")
                self.errors.append(e)
                payloads = [np.zeros(0, dtype=np.uint8) for _ in batch]
            responses = [lg.QuerySampleResponse(s.id, p.ctypes.data if p.size else 0, p.size)
                         for s, p in zip(batch, payloads)]
            with self._lock:
                self.answered += len(batch)
                self.answered_twice += [s.id for s in batch
                                        if self.pending.pop(s.id, None) is None]
            lg.QuerySamplesComplete(responses)  # copies the data; payloads may go after

    def stop(self) -> None:
        for w in self.workers:
            self.queue.put(None)
        for w in self.workers:
            w.join()


def build_settings(scenario: str, mode: str, user_conf: Optional[str] = None,
                   overrides: Optional[Dict] = None):
    """LoadGen ``TestSettings``: LoadGen's defaults (its built-in mlperf.conf), then
    ``user_conf`` (lines ``ssd-resnet34.<Scenario>.<key> = value`` or ``*.<Scenario>...``),
    then ``overrides`` (TestSettings attribute -> value; durations in ms, latencies in ns)."""
    import mlperf_loadgen as lg

    if scenario not in SCENARIOS or mode not in MODES:
        raise ValueError(f"scenario must be one of {SCENARIOS}, mode one of {MODES}; got "
                         f"{scenario!r}, {mode!r}")
    if user_conf and not os.path.exists(user_conf):
        raise FileNotFoundError(f"No user.conf {user_conf}")
    s = lg.TestSettings()  # conf_type 0: LoadGen's mlperf.conf only, 1: and a user.conf
    if s.FromConfig(user_conf or "", "ssd-resnet34", scenario, int(bool(user_conf))) != 0:
        raise ValueError(f"LoadGen could not read {user_conf} (see its log above).")
    s.scenario = getattr(lg.TestScenario, scenario)
    s.mode = lg.TestMode.AccuracyOnly if mode == "accuracy" else lg.TestMode.PerformanceOnly
    for key, value in ((k, v) for k, v in (overrides or {}).items() if v is not None):
        if not hasattr(s, key):
            raise ValueError(f"LoadGen's TestSettings has no {key!r}")
        setattr(s, key, value)
    return s


def run_loadgen(backend, qsl: DatasetQSL, scenario: str, mode: str, output_dir: str,
                settings=None, batch_size: int = 1, threads: int = 1,
                print_summary: bool = True) -> Dict:
    """Run one LoadGen test, its logs (mlperf_log_summary.txt, _detail.txt, _accuracy.json)
    into ``output_dir``.

    Returns:
        dict: ``summary`` (:func:`parse_summary`), ``issued`` and ``answered`` sample
        counts, ``lost`` (never answered), ``answered_twice`` (response ids answered while
        not outstanding), ``issued_twice``, ``errors`` (backend failures), ``seconds``.
    """
    import mlperf_loadgen as lg

    os.makedirs(output_dir, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = os.path.abspath(output_dir)
    log.log_output.copy_summary_to_stdout = bool(print_summary)
    log.enable_trace = False
    sut = SUT(backend, qsl, scenario, batch_size=batch_size, threads=threads)
    sut_handle = lg.ConstructSUT(sut.issue_queries, lambda: None)
    qsl_handle = lg.ConstructQSL(qsl.count, qsl.performance_sample_count, qsl.load_samples,
                                 qsl.unload_samples)
    t = time.perf_counter()
    try:
        lg.StartTestWithLogSettings(sut_handle, qsl_handle,
                                    settings or build_settings(scenario, mode), log)
    finally:
        seconds = time.perf_counter() - t
        sut.stop()
        lg.DestroyQSL(qsl_handle)
        lg.DestroySUT(sut_handle)
    summary = os.path.join(output_dir, "mlperf_log_summary.txt")
    return {"summary": parse_summary(summary) if os.path.exists(summary) else {},
            "issued": sut.issued, "answered": sut.answered, "lost": len(sut.pending),
            "answered_twice": list(sut.answered_twice), "issued_twice": sut.issued_twice,
            "errors": len(sut.errors), "seconds": seconds}


def parse_summary(path: str) -> Dict[str, str]:
    """``key : value`` lines of mlperf_log_summary.txt (e.g. "Result is": "VALID")."""
    out = {}
    with open(path) as f:
        for k, v in (line.split(" : ", 1) for line in f if " : " in line):
            out.setdefault(k.strip(), v.strip())
    return out


# ---- accuracy records: per detection float32 [qsl_idx, ymin, xmin, ymax, xmax, score, label],
# boxes in [0, 1] of the original image, label = the category's position in the annotation
# file's ``categories`` + 1 (the script's --use-inv-map maps it back); none: an empty record.
def encode_records(qsl_idx: int, boxes: np.ndarray, scores: np.ndarray,
                   labels: np.ndarray) -> bytes:
    """One sample's response data: M * 7 float32 values as bytes (empty for M == 0) from
    LoadGen's sample index, boxes (M, 4) XYXY in [0, 1] of the original image, scores (M,)
    and MLPerf labels (M,) (:func:`label_map_for`)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    rows = np.column_stack([np.full(len(boxes), qsl_idx), boxes[:, [1, 0, 3, 2]],  # y first
                            np.reshape(scores, -1), np.reshape(labels, -1)])
    return rows.astype(np.float32).tobytes()


def decode_records(data: bytes) -> np.ndarray:
    """Response data -> (M, 7) float32, as the accuracy script reads it."""
    return np.frombuffer(data, dtype=np.float32).reshape(-1, 7)


def label_map_for(metadata, coco) -> np.ndarray:
    """Detectron2 contiguous class id -> MLPerf label (K,) int64: the position of its category
    in the annotation file's ``categories`` + 1 (contiguous id i is ``coco.getCatIds()[i]``
    without ``thing_dataset_id_to_contiguous_id`` in ``metadata``)."""
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
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(json_file)


def load_accuracy_log(path: str) -> List[Dict]:
    """LoadGen's ``mlperf_log_accuracy.json``: a list of ``{"seq_id", "qsl_idx", "data"}``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No accuracy log {path}: run tools/mlperf_inference.py with "
                                "--mode accuracy first.")
    with open(path) as f:
        return json.load(f)


def score_accuracy_log(results: Sequence[Dict], coco, use_inv_map: bool = False,
                       remove_empty: bool = False, verbose: bool = False,
                       output_file: Optional[str] = None) -> Dict:
    """Score accuracy records as ``accuracy-coco.py``: the first answer of a ``qsl_idx``
    counts, ``qsl_idx`` indexes the script's image list (``mlperf_image_ids``), boxes scaled
    by the image's size in float32, COCOeval bbox on the images seen (also those without
    detections).

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
                             "annotation file" + ("" if remove_empty else " (was the log made "
                                                  "with --remove-48-empty-images?)"))
        image = image_map[idx]
        data = decode_records(bytes.fromhex(j["data"]))
        image_ids.add(image["id"])
        no_results += len(data) == 0
        height, width = image["height"], image["width"]
        for image_idx, ymin, xmin, ymax, xmax, score, label in data:
            mismatched += int(image_idx) != idx
            # float32 * int stays float32, as in the script
            ymin, xmin, ymax, xmax = ymin * height, xmin * width, ymax * height, xmax * width
            detections.append({"image_id": image["id"], "category_id":
                               inv_map[int(label)] if use_inv_map else int(label),
                               "bbox": [float(xmin), float(ymin), float(xmax - xmin),
                                        float(ymax - ymin)], "score": float(score)})
    if output_file:
        with open(output_file, "w") as f:
            json.dump(detections, f)
    stats = np.zeros(12)
    if detections:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            ev = COCOeval(coco, coco.loadRes(detections), iouType="bbox")
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


# ---- backends: ``predict(inputs) -> [(boxes, scores, classes), ...]`` on the QSL's samples,
# numpy per image: boxes (M, 4) XYXY in [0, 1] of the original image (clipped), scores (M,) best
# first, classes (M,) contiguous ids.
Detections = Tuple[np.ndarray, np.ndarray, np.ndarray]
_REGISTERED: Dict[str, Callable] = {}


def register_backend(name: str, factory: Callable) -> Callable:
    """Make ``--backend name`` build ``factory(cfg, args)``. Returns the factory."""
    _REGISTERED[name] = factory
    return factory


def build_backend(name: str, cfg, args=None):
    """The backend of ``--backend name``: a registered one, "pytorch" (:class:`PyTorchBackend`),
    "openvino" (the same with MODEL.SSD.INFERENCE_BACKEND openvino) or "onnxruntime" (the whole
    model in MLPerf's I/O convention, :class:`OnnxRuntimeBackend`)."""
    if name in _REGISTERED:
        return _REGISTERED[name](cfg, args)
    if name == "onnxruntime":
        return OnnxRuntimeBackend(cfg, args)
    if name not in BACKENDS:
        raise ValueError(f"Unknown backend {name!r}: choose one of "
                         f"{sorted(set(BACKENDS) | set(_REGISTERED))}.")
    if name != "pytorch":
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.SSD.INFERENCE_BACKEND = name
    return PyTorchBackend(cfg, args)


class PyTorchBackend:
    """SSDPredictor's model (MODEL.WEIGHTS, MODEL.SSD.*); a batch is one forward pass."""

    def __init__(self, cfg, args=None):
        self.model = SSDPredictor(cfg).model  # built, weights loaded, eval mode

    def predict(self, inputs: List[Dict]) -> List[Detections]:
        with torch.no_grad():
            outputs = [o["instances"].to("cpu") for o in self.model(inputs)]
        return [((o.pred_boxes.tensor.double() / torch.tensor(
            [x["width"], x["height"]] * 2, dtype=torch.float64)).numpy(), o.scores.numpy(),
            o.pred_classes.numpy()) for x, o in zip(inputs, outputs)]


class OnnxRuntimeBackend:
    """The ONNX model in MLPerf's I/O convention (``SSDMLPerfExportModule``,
    ``tools/export_model.py --mlperf-io``) on onnxruntime: ``args.onnx_model``, else the
    config's model exported into ``args.output`` (batch 1) first."""

    def __init__(self, cfg, args=None):
        self.mean, self.std = (torch.as_tensor(v, dtype=torch.float32).view(3, 1, 1)
                               for v in (cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD))

        path = getattr(args, "onnx_model", None)
        if not path:
            path = os.path.join(getattr(args, "output", ".") or ".", "model_mlperf.onnx")
            module = SSDMLPerfExportModule(SSDPredictor(cfg).model).eval()
            logger.info(f"Exporting the model to {path} (MLPerf I/O, batch 1)")
            export_onnx(module, module.example_input(), path)
        self.path, self.net = path, EngineNetwork("onnxruntime", path, threads=None)
        batch = self.net.input_shape[0]
        self.batch = batch if isinstance(batch, int) else None  # else any batch

    def predict(self, inputs: List[Dict]) -> List[Detections]:
        x = torch.stack([i["image"].float() if i.get("image_normalized")  # cv2-float
                         else (i["image"].float() - self.mean) / self.std for i in inputs])
        step, out = self.batch or len(x), []
        for i in range(0, len(x), step):
            n = min(step, len(x) - i)  # a fixed-batch model: the last chunk padded with zeros
            chunk = torch.nn.functional.pad(x[i:i + step], (0, 0, 0, 0, 0, 0, 0, step - n))
            boxes, labels, scores = (t.numpy() for t in self.net(chunk))
            for b, c, s in list(zip(boxes, labels, scores))[:n]:
                keep = s > 0  # padding of a batched export
                out.append((b[keep].astype(np.float64), s[keep], c[keep].astype(np.int64) - 1))
        return out
