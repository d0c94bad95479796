#!/usr/bin/env python
r"""Draw the ground truth of a data set, or what the SSD training mapper makes of it.

    # the annotations as they are, on the original images
    tools/visualize_data.py --config-file configs/ssd_r34_shapes.yaml --source annotation \
        --output out/vis_gt --num-images 8

    # after the training augmentations (SSD crop, flip, resize to INPUT.FIXED_SIZE, colour
    # jitter), exactly as the training mapper returns images and boxes
    tools/visualize_data.py --config-file configs/ssd_r34_shapes.yaml --source dataloader \
        --output out/vis_aug --num-images 8 --scale 2

    # one image through the augmentations many times, in one picture
    tools/visualize_data.py --config-file configs/ssd_r34_shapes.yaml --source dataloader \
        --output out/vis_aug --crop-grid docs/crop_grid.png --grid-size 15 --image-index 3

    # your own COCO-format data set, with its class names
    tools/visualize_data.py --config-file configs/ssd_r34_shapes.yaml --source annotation \
        --output out/vis_mine --dataset-coco mine_train train.json images/ --dataset mine_train

Uses DATASETS.TRAIN (all of its data sets, in order; --dataset to pick another one). Writes
one PNG per image, named after the image file. ``dataloader`` is deterministic in --seed.
Config overrides are KEY VALUE pairs after the options (``--opts KEY VALUE ...`` works too).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def get_parser():
    from ssd_r34.cli import args as cli

    p = cli.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--source", choices=["annotation", "dataloader"], required=True)
    p.add_argument("--output", "--output-dir", required=True, metavar="DIR", dest="output")
    p.add_argument("--num-images", type=int, default=8, help="images to draw (default 8)")
    p.add_argument("--dataset", metavar="NAME", help="instead of DATASETS.TRAIN")
    p.add_argument("--scale", type=float, default=1.0, help="drawing scale (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the augmentations")
    p.add_argument("--crop-grid", metavar="PNG",
                   help="also draw one image and --grid-size augmentations of it into PNG")
    p.add_argument("--grid-size", type=int, default=11, help="augmentations in the grid")
    p.add_argument("--image-index", type=int, default=0, help="the grid's image (index)")
    return cli.add_common_arguments(p)


def load_dicts(names):
    from detectron2.data import DatasetCatalog

    from ssd_r34.data import ensure_dataset

    dicts = []
    for name in names:
        ensure_dataset(name)
        dicts += DatasetCatalog.get(name)
    return dicts


def draw_annotation(d, metadata, scale):
    """A dataset dict -> RGB picture of its ground truth on the original image."""
    from detectron2.data.detection_utils import read_image
    from detectron2.utils.visualizer import Visualizer

    img = read_image(d["file_name"], format="RGB")
    return Visualizer(img, metadata, scale=scale).draw_dataset_dict(d).get_image()


def draw_mapped(out, metadata, image_format, scale):
    """The training mapper's output -> RGB picture (its image, boxes and labels)."""
    from detectron2.data.detection_utils import convert_image_to_rgb
    from detectron2.utils.visualizer import Visualizer

    img = convert_image_to_rgb(out["image"].permute(1, 2, 0).numpy(), image_format)
    vis = Visualizer(img, metadata, scale=scale)
    inst = out["instances"]
    names = getattr(metadata, "thing_classes", None)
    labels = [names[c] if names else str(c) for c in inst.gt_classes.tolist()]
    return vis.overlay_instances(labels=labels, boxes=inst.gt_boxes.tensor.numpy()).get_image()


def map_with_retry(mapper, d, tries=100):
    """The mapper returns None when the crop leaves no box (the loader then draws another
    image); here the same image is drawn again."""
    for _ in range(tries):
        out = mapper(d)
        if out is not None:
            return out
    raise RuntimeError(f"The training mapper returned no box {tries} times for {d['file_name']}")


def crop_grid(d, mapper, metadata, cfg, path, n, scale):
    """Original with ground truth, then ``n`` draws of the training augmentations."""
    from ssd_r34.engine.visualization import save_montage

    H, W = cfg.INPUT.FIXED_SIZE
    # the original at about the tiles' size, so that labels come out alike
    orig_scale = scale * max(H, W) / max(d.get("height", H), d.get("width", W))
    tiles = [("original", draw_annotation(d, metadata, orig_scale))]
    for i in range(n):
        tiles.append((f"augmented #{i + 1}", draw_mapped(map_with_retry(mapper, d), metadata,
                                                         cfg.INPUT.FORMAT, scale)))
    return save_montage(tiles, path, cols=4, tile=(3, 3.2),
                        title=f"{os.path.basename(d['file_name'])}: SSD crop + flip + resize to "
                              f"{H}x{W} + colour jitter")


def main(args):
    import torch
    from PIL import Image

    from ssd_r34.data import SSDDatasetMapper, dataset_metadata
    from ssd_r34.cli import args as cli

    cfg = cli.inference_cfg(args)
    names = [args.dataset] if args.dataset else list(cfg.DATASETS.TRAIN)
    dicts = load_dicts(names)
    metadata = dataset_metadata(names[0])
    np.random.seed(args.seed)  # Detectron2's augmentations draw from numpy's global RNG
    torch.manual_seed(args.seed)  # torchvision's ColorJitter parameters
    mapper = SSDDatasetMapper(cfg, is_train=True)

    os.makedirs(args.output, exist_ok=True)
    written = []
    for d in dicts[: args.num_images]:
        if args.source == "annotation":
            img = draw_annotation(d, metadata, args.scale)
        else:
            img = draw_mapped(map_with_retry(mapper, d), metadata, cfg.INPUT.FORMAT, args.scale)
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        path = os.path.join(args.output, f"{stem}.png")
        Image.fromarray(np.ascontiguousarray(img)).save(path)
        written.append(path)
    print(f"{len(written)} {args.source} picture(s) written to {args.output}")
    grid = None
    if args.crop_grid:
        grid = crop_grid(dicts[args.image_index], mapper, metadata, cfg, args.crop_grid,
                         args.grid_size, args.scale)
        print(f"Crop grid written to {grid}")
    return {"written": written, "crop_grid": grid}


if __name__ == "__main__":
    main(get_parser().parse_args())
