"""Run SSD-ResNet34 on images and draw the detections with Detectron2's Visualizer; writes
the pictures and detections.json (docs/tools.md)."""
import glob
import json
import os
import sys

from PIL import Image
from tqdm import tqdm

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import read_image
from detectron2.utils.visualizer import ColorMode, Visualizer

from ..engine import SSDPredictor
from . import args as cli
from .visualize_data import save_montage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")


def get_parser():
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH",
                     help="image files, folders (their images) or glob patterns")
    src.add_argument("--dataset", nargs="?", const="", metavar="NAME",
                     help="a registered data set; without NAME the config's DATASETS.TEST[0]")
    p.add_argument("--num-images", type=int, default=6, help="with --dataset (0: all)")
    p.add_argument("--output", required=True, metavar="DIR", help="pictures, detections.json")
    p.add_argument("--confidence-threshold", type=float, default=0.3,
                   help="minimum score of a detection drawn and written")
    p.add_argument("--scale", type=float, default=1.0, help="scale of the drawn pictures")
    p.add_argument("--montage", metavar="PNG", help="also all the pictures in one PNG")
    return cli.add_common_arguments(p)


def expand_inputs(patterns):
    """Files, folders (their image files, sorted) and glob patterns -> a list of paths.
    A path that does not exist and matches nothing is kept: it is reported when read."""
    paths = []
    for pat in patterns:
        if os.path.isdir(pat):
            paths += sorted(os.path.join(pat, f) for f in os.listdir(pat)
                            if f.lower().endswith(IMAGE_EXTENSIONS))
        elif os.path.exists(pat):
            paths.append(pat)
        else:
            matches = sorted(glob.glob(os.path.expanduser(pat)))
            paths += [m for m in matches if os.path.isfile(m)] or [pat]
    return paths


def output_name(path, used):
    """A new file name in ``used`` for ``path``'s picture (.png unless PNG / JPEG)."""
    stem, ext = os.path.splitext(os.path.basename(path) or "image")
    ext = ext if ext.lower() in (".png", ".jpg", ".jpeg") else ".png"
    name, i = stem + ext, 1
    while name in used:
        name, i = f"{stem}_{i}{ext}", i + 1
    used.add(name)
    return name


def instances_to_coco(instances, image_id, file_name, classes):
    """Instances -> COCO-style result dicts; ``classes``: :func:`ssd_r34.cli.args.class_table`."""
    boxes = instances.pred_boxes.tensor.double().tolist()
    return [{"image_id": image_id, "file_name": file_name,
             "category_id": classes[c]["category_id"], "category_name": classes[c]["name"],
             "bbox": [round(x0, 3), round(y0, 3), round(x1 - x0, 3), round(y1 - y0, 3)],
             "score": round(s, 6)}
            for (x0, y0, x1, y1), s, c in zip(boxes, instances.scores.tolist(),
                                              instances.pred_classes.tolist())]


def main(argv=None):
    """Returns: {"written": [pictures], "skipped": [unreadable], "json": path, "detections"}."""
    args = get_parser().parse_args(argv)
    cli.setup_tool_logger()
    cfg = cli.inference_cfg(args)
    if args.input is not None:
        items = [(p, i + 1) for i, p in enumerate(expand_inputs(args.input))]
    else:
        name = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
        if not name:
            raise SystemExit("--dataset: give a name; the config has no DATASETS.TEST.")
        dicts = DatasetCatalog.get(name)
        items = [(d["file_name"], d.get("image_id", i + 1))  # (path, image_id)
                 for i, d in enumerate(dicts[: args.num_images] if args.num_images > 0 else dicts)]
    if not items:
        raise SystemExit("No input images.")

    predictor = SSDPredictor(cfg, image_format="RGB")
    classes = cli.class_table(cfg, predictor.metadata)
    os.makedirs(args.output, exist_ok=True)
    results, written, skipped, used, pictures = [], [], [], set(), []
    for path, image_id in tqdm(items, desc="demo", unit="image", file=sys.stderr):
        try:
            image = read_image(path, format="RGB")
        except Exception as e:  # PIL's UnidentifiedImageError, OSError, FileNotFoundError
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            tqdm.write(f"WARNING: skipping {path}: cannot read it as an image ({reason})",
                       file=sys.stderr)
            skipped.append(path)
            continue
        instances = predictor(image)["instances"].to("cpu")
        instances = instances[instances.scores >= args.confidence_threshold]
        results += instances_to_coco(instances, image_id, path, classes)
        vis = Visualizer(image, predictor.metadata, scale=args.scale, instance_mode=ColorMode.IMAGE)
        drawn = vis.draw_instance_predictions(instances).get_image()
        written.append(os.path.join(args.output, output_name(path, used)))
        Image.fromarray(drawn).save(written[-1])
        if args.montage:
            pictures.append((f"{os.path.basename(path)}: {len(instances)} detection(s)", drawn))
    if args.montage and pictures:
        save_montage(pictures, args.montage)
        print(f"Montage of {len(pictures)} picture(s) written to {args.montage}")
    json_path = os.path.join(args.output, "detections.json")
    with open(json_path, "w") as f:  # a JSON list, one detection a line
        f.write("[\n" + ",\n".join(json.dumps(d) for d in results) + "\n]\n")
    print(f"{len(written)} image(s) with {len(results)} detection(s) (score >= "
          f"{args.confidence_threshold}) written to {args.output}, detections in {json_path}"
          + (f"; {len(skipped)} unreadable image(s) skipped" if skipped else ""))
    return {"written": written, "skipped": skipped, "json": json_path, "detections": results}

