"""Score LoadGen's mlperf_log_accuracy.json as MLPerf's accuracy-coco.py does (same options,
arithmetic and printout) and print ``mAP=NN.NNN%``. Usage: docs/mlperf_inference.md."""
import argparse
import os

from ..engine.mlperf import load_accuracy_log, load_coco, score_accuracy_log


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="docs/mlperf_inference.md")
    p.add_argument("--mlperf-accuracy-file", required=True, help="mlperf_log_accuracy.json")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--annotations", metavar="JSON", help="the COCO annotation file")
    g.add_argument("--coco-dir", help="as accuracy-coco.py: DIR/annotations/instances_val2017.json")
    p.add_argument("--use-inv-map", action="store_true", help="labels are category positions + 1")
    p.add_argument("--remove-48-empty-images", action="store_true",
                   help="the log indexes the images with annotations (MLPerf's 4952 of val2017)")
    p.add_argument("--output-file", help="also write the COCO detections json here")
    p.add_argument("--verbose", action="store_true")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    annotations = args.annotations or os.path.join(args.coco_dir,
                                                   "annotations/instances_val2017.json")
    if not os.path.exists(annotations):
        raise SystemExit(f"No annotation file {annotations}")
    r = score_accuracy_log(load_accuracy_log(args.mlperf_accuracy_file), load_coco(annotations),
                           use_inv_map=args.use_inv_map,
                           remove_empty=args.remove_48_empty_images, verbose=True,
                           output_file=args.output_file)
    if r["mismatched"]:
        print(f"ERROR: {r['mismatched']} detection(s) whose own index disagrees with LoadGen's "
              "qsl_idx")
    print("mAP={:.3f}%".format(100.0 * r["mAP"]))
    if args.verbose:
        print(f"found {r['results']} results\nfound {r['images']} images\nfound "
              f"{r['no_results']} images with no results\nignored {r['dupes']} dupes")
    return r
