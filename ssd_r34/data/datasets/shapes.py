"""The built-in ``shapes`` toy detection data set, generated deterministically as COCO json
(the rules, the files and the registration: docs/data.md, "The generator")."""
import contextlib
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, ImageDraw

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..transforms import iou_with_rect

__all__ = ["SHAPES_CLASSES", "SHAPES_DIR", "SHAPES_SPLITS", "default_root", "generate_shapes",
           "register_shapes", "ensure_shapes", "shapes_split_sizes"]

SHAPES_CLASSES = ["circle", "square", "triangle"]
# The folder under the root; its suffix is the generator's version.
SHAPES_DIR = "shapes_v2"
# split -> (number of images, seed); val (any split but train) has images with no object
SHAPES_SPLITS = {"train": (1000, 0), "val": (200, 1)}

# registered data set name -> (root, split, number of images, seed)
_REGISTERED = {}


def default_root():
    """The data folder: ``$SSD_R34_DATASETS`` if set, else ``~/.cache/ssd_r34``."""
    return os.path.abspath(os.path.expanduser(
        os.environ.get("SSD_R34_DATASETS") or os.path.join("~", ".cache", "ssd_r34")))


def shapes_split_sizes():  # {"shapes_train": 1000, ...}
    return {f"shapes_{split}": n for split, (n, _) in SHAPES_SPLITS.items()}


# Backgrounds are muted (channels <= BACKGROUND_MAX), shapes bright (>= SHAPE_MIN), so that
# a from-scratch model finds the shapes within make demo's 600 iterations.
BACKGROUND_MAX = 120
SHAPE_MIN = 110


def _background(rng, h, w):
    # A flat colour (25%), a two-colour gradient (35%) or a blend of four corners (40%):
    # (uint8 image with mild noise, uint8 background without noise), both (h, w, 3).
    u = rng.random()
    c = (rng.integers(0, 256, (4, 3)) * BACKGROUND_MAX // 255).astype(np.uint8)  # muted
    if u < 0.25:
        corners = np.stack([c[0]] * 4)
    elif u < 0.6:
        corners = c[[0, 1, 0, 1]] if rng.random() < 0.5 else c[[0, 0, 1, 1]]
    else:
        corners = c
    smooth = np.asarray(Image.fromarray(corners.reshape(2, 2, 3)).resize((w, h), Image.BILINEAR))
    noise = (np.frombuffer(rng.bytes(h * w * 3), np.uint8).reshape(h, w, 3) & 15)
    noisy = np.clip(smooth.astype(np.int16) + noise.astype(np.int16) - 8, 0, 255)
    return noisy.astype(np.uint8), smooth


def _pick_colour(rng, refs):
    # A bright colour (channels >= SHAPE_MIN) at L1 >= 150 from every colour in refs, else
    # the most distant of 30 tries (bounded: generation never loops forever).
    best, best_d = None, -1.0
    for _ in range(30):
        c = rng.integers(SHAPE_MIN, 256, 3)
        d = min(float(np.abs(c.astype(np.float32) - r).sum()) for r in refs)
        if d >= 150:
            return c
        if d > best_d:
            best, best_d = c, d
    return best


def _draw_shape(draw, cls, box, fill):  # SHAPES_CLASSES[cls] filling box
    x0, y0, x1, y1 = box
    if cls == 2:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        (draw.ellipse if cls == 0 else draw.rectangle)([x0, y0, x1, y1], fill=fill)


def _draw_image(rng, allow_empty):
    # One image: (PIL RGB image, [{"category_id", "bbox"}, ...]).
    w, h = (int(v) for v in rng.integers(160, 257, 2))
    arr, bg = _background(rng, h, w)
    img = Image.fromarray(arr)
    draw = ImageDraw.Draw(img)
    clutter = []  # colours of the clutter: the shapes' colours keep away from them
    for _ in range(int(rng.integers(1, 4))):  # clutter: thin lines (not objects)
        pts = [float(v) for v in rng.uniform(0, 1, 4) * [w, h, w, h]]
        clutter.append(rng.integers(0, 256, 3))
        draw.line(pts, fill=tuple(int(v) for v in clutter[-1]), width=1)
    for _ in range(int(rng.integers(3, 10))):  # clutter: specks under 6 px (not objects)
        x, y = float(rng.uniform(0, w - 5)), float(rng.uniform(0, h - 5))
        sx, sy = (float(v) for v in rng.uniform(1, 4, 2))
        clutter.append(rng.integers(0, 256, 3))
        fill = tuple(int(v) for v in clutter[-1])
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x, y, x + sx, y + sy], fill=fill)

    n = 0 if allow_empty and rng.random() < 0.1 else int(rng.integers(1, 3))
    short = min(w, h)
    placed = []  # (cls, box, mask as a bool array)
    visible = []  # the pixels of each placed shape not covered by a later one
    for _ in range(30 * n):
        if len(placed) == n:
            break
        cls = int(rng.integers(0, 3))
        long_side = rng.uniform(0.12, 0.6) * short
        aspect = rng.uniform(0.6, 1.6)  # width / height
        bw, bh = (long_side, long_side / aspect) if aspect >= 1 else (long_side * aspect, long_side)
        x0, y0 = rng.uniform(1, w - bw - 1), rng.uniform(1, h - bh - 1)
        box = (float(x0), float(y0), float(x0 + bw), float(y0 + bh))
        if placed and (iou_with_rect(np.array([b for _, b, _ in placed]), box) > 0.3).any():
            continue
        # the same shape on a mask (same rasteriser, same pixels as on the image)
        mask_img = Image.new("L", (w, h), 0)
        _draw_shape(ImageDraw.Draw(mask_img), cls, box, 255)
        mask = np.asarray(mask_img) > 0
        # drawn last, the new shape must leave >= 60% of every earlier shape visible
        if any((vis & ~mask).sum() < 0.6 * m.sum() for (_, _, m), vis in zip(placed, visible)):
            continue
        visible = [vis & ~mask for vis in visible] + [mask]
        placed.append((cls, box, mask))

    annotations, drawn = [], []  # drawn: colours of the earlier shapes
    for cls, box, mask in placed:
        x0, y0, x1, y1 = box
        xs = [min(max(int(v), 0), w - 1) for v in (x0, (x0 + x1) / 2, x1)]
        ys = [min(max(int(v), 0), h - 1) for v in (y0, (y0 + y1) / 2, y1)]
        refs = [bg[y, x].astype(np.float32) for y in ys for x in xs]  # background under it
        refs += [c.astype(np.float32) for c in drawn + clutter]  # other shapes, clutter
        colour = tuple(int(v) for v in _pick_colour(rng, refs))
        _draw_shape(draw, cls, box, colour)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))  # tight box
        annotations.append({"category_id": cls + 1, "bbox": [
            float(cols[0]), float(rows[0]), float(cols[-1] + 1 - cols[0]),
            float(rows[-1] + 1 - rows[0])]})
        drawn.append(np.array(colour))
    return img, annotations


def _complete_image_dir(image_dir, file_names):
    return os.path.isdir(image_dir) and set(file_names) <= set(os.listdir(image_dir))


def generate_shapes(root, split, num_images, seed):
    """Write ``<root>/shapes_v2/<split>/NNNNN.jpg`` and ``<split>.json`` (COCO) unless the
    json exists; returns its path. Deterministic in ``seed``; in every split but ``train``
    about 10% of the images hold no object. Safe for concurrent processes: each writes a
    private temporary folder, then renames the images, the json last.
    """
    base = os.path.join(os.fspath(root), SHAPES_DIR)
    json_file = os.path.join(base, f"{split}.json")
    if os.path.exists(json_file):
        return json_file
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{split}-", dir=base)
    try:
        rng = np.random.default_rng(seed)
        tmp_images = os.path.join(tmp, split)
        os.makedirs(tmp_images)
        images, annotations = [], []
        for i in range(num_images):
            img, annos = _draw_image(rng, allow_empty=split != "train")
            name = f"{i:05d}.jpg"
            img.save(os.path.join(tmp_images, name), format="JPEG", quality=95)
            images.append({"id": i + 1, "file_name": name, "height": img.height,
                           "width": img.width})
            for a in annos:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **a,
                                    "area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0})
        coco = {"info": {"description": f"ssd_r34 shapes {split} (seed {seed})"},
                "images": images, "annotations": annotations,
                "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                               for i, n in enumerate(SHAPES_CLASSES)]}
        tmp_json = os.path.join(tmp, f"{split}.json")
        with open(tmp_json, "w") as f:
            json.dump(coco, f)
            f.flush()
            os.fsync(f.fileno())

        if os.path.exists(json_file):  # another process finished meanwhile
            return json_file
        image_dir = os.path.join(base, split)
        names = [im["file_name"] for im in images]
        if not _complete_image_dir(image_dir, names):
            with contextlib.suppress(OSError):  # a stale, incomplete folder: move it aside
                os.rename(image_dir, os.path.join(tmp, "stale"))
            with contextlib.suppress(OSError):  # or a concurrent process won: same images
                os.rename(tmp_images, image_dir)
        if not _complete_image_dir(image_dir, names):
            raise RuntimeError(f"could not put the images of {split!r} into {image_dir}")
        os.replace(tmp_json, json_file)  # atomic; the json last: now the split is complete
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json_file


def ensure_shapes(name):
    """Generate the files of the registered shapes data set ``name`` if missing; returns the
    json path (None for other names)."""
    if name not in _REGISTERED:
        return None
    root, split, num_images, seed = _REGISTERED[name]
    return generate_shapes(root, split, num_images, seed)


def register_shapes(root=None, prefix="shapes"):
    """Register ``<prefix>_train`` and ``<prefix>_val`` in Detectron2's catalogs (files made
    on first load; ``root``: default_root(), resolved now; registered names are skipped).
    Returns the names."""
    root = os.path.abspath(os.path.expanduser(os.fspath(root))) if root else default_root()
    base, names = os.path.join(root, SHAPES_DIR), []
    for split, (num_images, seed) in SHAPES_SPLITS.items():
        name = f"{prefix}_{split}"
        names.append(name)
        if name in DatasetCatalog.list():
            continue
        _REGISTERED[name] = (root, split, num_images, seed)
        DatasetCatalog.register(name, lambda name=name, split=split: load_coco_json(
            ensure_shapes(name), os.path.join(base, split), name))
        MetadataCatalog.get(name).set(  # the json exists iff the split is complete
            thing_classes=list(SHAPES_CLASSES), json_file=os.path.join(base, f"{split}.json"),
            image_root=os.path.join(base, split), evaluator_type="coco")
    return names
