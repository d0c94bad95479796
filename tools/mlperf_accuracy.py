#!/usr/bin/env python
r"""Score LoadGen's mlperf_log_accuracy.json as MLPerf's accuracy-coco.py does and print
``mAP=NN.NNN%``.

    tools/mlperf_accuracy.py --mlperf-accuracy-file out/mlperf/acc/mlperf_log_accuracy.json \
        --annotations datasets/coco/annotations/instances_val2017.json \
        --use-inv-map --remove-48-empty-images

A re-implementation of mlcommons/inference ``vision/classification_and_detection/tools/
accuracy-coco.py`` (same options, same arithmetic, same printout), for users without the
MLPerf repository: each record's hex data is float32 7-tuples ``[qsl_idx, ymin, xmin, ymax,
xmax, score, label]`` (boxes in [0, 1]); ``qsl_idx`` indexes the annotation file's images
(with --remove-48-empty-images: the images with annotations, in the script's order); labels
are category ids, or with --use-inv-map positions in the file's categories + 1. Duplicate
answers of a sample count once; images without detections count in the evaluation.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
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


def main(args):
    from ssd_r34.mlperf import load_accuracy_log, load_coco, score_accuracy_log

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
        print(f"found {r['results']} results")
        print(f"found {r['images']} images")
        print(f"found {r['no_results']} images with no results")
        print(f"ignored {r['dupes']} dupes")
    return r


if __name__ == "__main__":
    main(get_parser().parse_args())
