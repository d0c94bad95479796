"""What the command lines share: ``--dataset-coco`` / ``--dataset-voc``, config overrides as
bare ``KEY VALUE`` pairs after the options (or after ``--opts``), Detectron2's launch and
logs without colour codes off a terminal (docs/tools.md)."""
import argparse
import logging
import os
import re
import sys

from detectron2.engine import launch
from detectron2.utils.logger import setup_logger

from ..config import get_ssd_cfg
from ..engine.defaults import plain_logs_off_terminal
from ..engine.predictor import setup_inference_cfg
from ..model_zoo import get_config_file

_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Za-z0-9_]+)*$")
_TOP_KEYS = []


def is_config_key(token: str) -> bool:
    """True for a token whose first part is a top-level config key (``SEED``,
    ``MODEL.WEIGHTS``, also a mistyped ``MODEL.WEIGTHS``, so that the typo fails naming it)."""
    if not _TOP_KEYS:
        _TOP_KEYS.extend(get_ssd_cfg().keys())
    return bool(_KEY.match(token)) and token.split(".")[0] in _TOP_KEYS


def split_overrides(argv):
    """Split a command line at ``--opts`` or at the first config key, also after an option
    that takes several values (``--input a.jpg MODEL.WEIGHTS m.pth``).

    Returns:
        (list[str], list[str]): the options, and the overrides (without ``--opts``).
    """
    argv = list(argv)
    for i, token in enumerate(argv):
        if token == "--":
            break
        if token == "--opts" or is_config_key(token):
            return argv[:i], argv[i + (token == "--opts"):]
    return argv, []


class ArgumentParser(argparse.ArgumentParser):
    """Splits the overrides off first (:func:`split_overrides`) into ``args.opts`` and checks
    they come in pairs."""

    def parse_known_args(self, args=None, namespace=None):
        head, tail = split_overrides(sys.argv[1:] if args is None else args)
        ns, extra = super().parse_known_args(head, namespace)
        ns.opts = list(getattr(ns, "opts", None) or []) + tail
        for e in getattr(ns, "dataset_voc", None) or []:
            if len(e) not in (3, 4):
                self.error(f"--dataset-voc takes NAME DIR SPLIT [CLASSES], got {' '.join(e)}")
        if len(ns.opts) % 2:
            self.error(f"config overrides come in KEY VALUE pairs, got {len(ns.opts)} words: "
                       f"{' '.join(ns.opts)}")
        return ns, extra


def add_common_arguments(parser, datasets=True):
    """The repeatable ``--dataset-coco NAME JSON IMAGE_ROOT`` and ``--dataset-voc NAME DIR
    SPLIT [CLASSES]`` (``datasets``; appended to DATASETS.COCO / DATASETS.VOC by
    :func:`ssd_r34.config.setup_cfg`), and trailing ``KEY VALUE`` overrides into
    ``args.opts`` unless the parser has ``opts`` already."""
    if datasets:
        group = parser.add_argument_group("your own data sets (docs/data.md)")
        group.add_argument("--dataset-coco", nargs=3, action="append", default=[],
                           metavar=("NAME", "JSON", "IMAGE_ROOT"),
                           help="a COCO-format json file and its image folder (repeatable)")
        group.add_argument("--dataset-voc", nargs="+", action="append", default=[],
                           metavar="NAME DIR SPLIT [CLASSES]", help="a Pascal VOC folder and "
                           "split, CLASSES as 'a,b,...' (repeatable)")
    if not any(a.dest == "opts" for a in parser._actions):
        parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                            help="config overrides after the options, e.g. MODEL.WEIGHTS m.pth")
    return parser


def resolve_config_file(path: str) -> str:
    """``path`` if it exists, else the model-zoo config of that name."""
    if not path or os.path.exists(path):
        return path
    return get_config_file(path)


def inference_cfg(args, device=None):
    """The frozen config of an inference tool from ``args`` (config_file, opts, data sets):
    :func:`ssd_r34.engine.setup_inference_cfg`."""
    return setup_inference_cfg(args.config_file, args.opts, device=device,
                               dataset_coco=args.dataset_coco, dataset_voc=args.dataset_voc)


def class_table(cfg, metadata):
    """[{"id": contiguous id, "category_id": the data set's id (else id), "name": ...}] per
    output class (MODEL.SSD.NUM_CLASSES), with a warning where the metadata has another count."""
    names = list(metadata.get("thing_classes", None) or []) if metadata else []
    m = metadata.get("thing_dataset_id_to_contiguous_id", None) if metadata else None
    to_dataset = {v: k for k, v in (m or {}).items()}
    if names and len(names) != cfg.MODEL.SSD.NUM_CLASSES:
        logging.getLogger(__name__).warning(
            "%s has %d classes but MODEL.SSD.NUM_CLASSES is %d: labels may be wrong.",
            cfg.DATASETS.TEST[0], len(names), cfg.MODEL.SSD.NUM_CLASSES)
    return [{"id": i, "category_id": int(to_dataset.get(i, i)),
             "name": names[i] if i < len(names) else str(i)}
            for i in range(cfg.MODEL.SSD.NUM_CLASSES)]


def setup_tool_logger():
    """Detectron2's console logger for ssd_r34's messages, plain where stdout is no terminal."""
    setup_logger(name="ssd_r34")
    plain_logs_off_terminal()


def launch_main(run, args):
    """``run(args)`` under Detectron2's ``launch`` (``--num-gpus`` ...); with one process, in
    this one, returning what ``run`` returns."""
    if args.num_gpus * args.num_machines <= 1:
        return run(args)
    launch(run, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
