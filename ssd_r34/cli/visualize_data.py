"""Draw the ground truth of a data set, or what the SSD training mapper makes of it
(docs/tools.md)."""
import os

import numpy as np
import torch
from PIL import Image

from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import convert_image_to_rgb, read_image
from detectron2.utils.visualizer import Visualizer

from ..data import SSDDatasetMapper, dataset_metadata
from . import args as cli


def get_parser():
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
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


def save_montage(pictures, path, cols=3, tile=(4, 4.2), title=None):
    """[(title, RGB array (H, W, 3))] -> one PNG at ``path``, ``cols`` pictures a row of
    ``tile`` inches each. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(cols, len(pictures))
    rows = (len(pictures) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(tile[0] * cols, tile[1] * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, img) in zip(axes.flat, pictures):
        ax.imshow(img)
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def draw_annotation(d, metadata, scale):
    """A dataset dict -> RGB picture of its ground truth on the original image."""
    img = read_image(d["file_name"], format="RGB")
    return Visualizer(img, metadata, scale=scale).draw_dataset_dict(d).get_image()


def draw_mapped(out, metadata, image_format, scale):
    """The training mapper's output -> RGB picture of its image, boxes and labels."""
    img = convert_image_to_rgb(out["image"].permute(1, 2, 0).numpy(), image_format)
    inst = out["instances"]
    names = getattr(metadata, "thing_classes", None)
    labels = [names[c] if names else str(c) for c in inst.gt_classes.tolist()]
    return Visualizer(img, metadata, scale=scale).overlay_instances(
        labels=labels, boxes=inst.gt_boxes.tensor.numpy()).get_image()


def main(argv=None):
    """Returns: {"written": [PNG paths], "crop_grid": its path or None}."""
    args = get_parser().parse_args(argv)
    cfg = cli.inference_cfg(args)
    names = [args.dataset] if args.dataset else list(cfg.DATASETS.TRAIN)
    dicts = [d for name in names for d in DatasetCatalog.get(name)]
    metadata = dataset_metadata(names[0])
    np.random.seed(args.seed)  # Detectron2's augmentations draw from numpy's global RNG
    torch.manual_seed(args.seed)  # torchvision's ColorJitter parameters
    mapper = SSDDatasetMapper(cfg, is_train=True)

    def mapped(d, scale):  # None when the crop leaves no box: the same image drawn again
        for _ in range(100):
            out = mapper(d)
            if out is not None:
                return draw_mapped(out, metadata, cfg.INPUT.FORMAT, scale)
        raise RuntimeError(f"The training mapper returned no box 100 times for {d['file_name']}")

    os.makedirs(args.output, exist_ok=True)
    written = []
    for d in dicts[: args.num_images]:
        img = draw_annotation(d, metadata, args.scale) if args.source == "annotation" \
            else mapped(d, args.scale)
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        written.append(os.path.join(args.output, f"{stem}.png"))
        Image.fromarray(img).save(written[-1])
    print(f"{len(written)} {args.source} picture(s) written to {args.output}")
    grid = None
    if args.crop_grid:  # the original at about the tiles' size, then the augmentations
        d, (H, W) = dicts[args.image_index], cfg.INPUT.FIXED_SIZE
        orig_scale = args.scale * max(H, W) / max(d.get("height", H), d.get("width", W))
        tiles = [("original", draw_annotation(d, metadata, orig_scale))]
        tiles += [(f"augmented #{i + 1}", mapped(d, args.scale)) for i in range(args.grid_size)]
        grid = save_montage(tiles, args.crop_grid, cols=4, tile=(3, 3.2),
                            title=f"{os.path.basename(d['file_name'])}: SSD crop + flip + "
                                  f"resize to {H}x{W} + colour jitter")
        print(f"Crop grid written to {grid}")
    return {"written": written, "crop_grid": grid}
