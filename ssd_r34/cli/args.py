"""What every command line in tools/ shares: naming your own data sets (``--dataset-coco``,
``--dataset-voc``), config overrides as bare ``KEY VALUE`` pairs after the options (as
Detectron2's ``train_net.py``; ``--opts KEY VALUE`` is the same), and logs without colour
codes where the output is not a terminal.

A tool builds its parser as :class:`ArgumentParser` and calls :func:`add_common_arguments`::

    p = args.ArgumentParser(description="...")
    p.add_argument("--config-file", required=True)
    cli.add_common_arguments(p)
    args = p.parse_args()          # args.opts: the overrides; args.dataset_coco: [(N, J, R)]
    cfg = cli.inference_cfg(args)  # or ssd_r34.engine.setup(args) for training
"""
import argparse
import logging
import re
import sys

from detectron2.utils.logger import setup_logger

from ..engine.defaults import plain_logs_off_terminal

__all__ = ["ArgumentParser", "add_common_arguments", "add_dataset_arguments",
           "add_override_arguments", "split_overrides", "dataset_flags", "inference_cfg",
           "setup_tool_logger"]

_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Za-z0-9_]+)*$")
_TOP_KEYS = None


def _top_level_keys():
    global _TOP_KEYS
    if _TOP_KEYS is None:
        from ..config import get_ssd_cfg

        _TOP_KEYS = frozenset(get_ssd_cfg().keys())
    return _TOP_KEYS


def is_config_key(token: str) -> bool:
    """True for a token that names a config key: ``SEED``, ``MODEL.WEIGHTS``, and also a
    mistyped ``MODEL.WEIGTHS`` (its first part is a key), so that a typo fails naming it."""
    return bool(_KEY.match(token)) and token.split(".")[0] in _top_level_keys()


def split_overrides(argv):
    """Split a command line into (options, overrides) at ``--opts`` or at the first token
    that names a config key (:func:`is_config_key`): everything from there on is
    ``KEY VALUE`` pairs, even after an option that takes several values (``--input a.jpg
    b.jpg MODEL.WEIGHTS model.pth``).

    Args:
        argv (list[str]): the arguments, without the program name.

    Returns:
        (list[str], list[str]): the options, and the overrides (without ``--opts``).
    """
    argv = list(argv)
    for i, token in enumerate(argv):
        if token == "--":
            break
        if token == "--opts":
            return argv[:i], argv[i + 1:]
        if is_config_key(token):
            return argv[:i], argv[i:]
    return argv, []


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that splits the config overrides off first
    (:func:`split_overrides`) and returns them as ``args.opts``; the options are parsed as
    usual. ``formatter_class`` defaults to ``RawDescriptionHelpFormatter``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

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


def add_dataset_arguments(parser):
    """``--dataset-coco NAME JSON IMAGE_ROOT`` and ``--dataset-voc NAME DIR SPLIT
    [CLASSES]`` (both repeatable), into ``args.dataset_coco`` / ``args.dataset_voc``:
    lists appended to DATASETS.COCO / DATASETS.VOC by :func:`ssd_r34.config.setup_cfg`."""
    group = parser.add_argument_group(
        "your own data sets", "Registered in every process (DATASETS.COCO / DATASETS.VOC), "
        "so that DATASETS.TRAIN / DATASETS.TEST can name them; see docs/data.md.")
    group.add_argument("--dataset-coco", nargs=3, action="append", default=[],
                       metavar=("NAME", "JSON", "IMAGE_ROOT"),
                       help="a COCO-format json file and its image folder (repeatable)")
    group.add_argument("--dataset-voc", nargs="+", action="append", default=[],
                       metavar="NAME DIR SPLIT [CLASSES]",
                       help="a Pascal VOC folder and split, with VOC's 20 classes or "
                            "CLASSES as 'a,b,...' (repeatable)")
    return parser


def add_override_arguments(parser):
    """The config overrides: trailing ``KEY VALUE`` pairs into ``args.opts`` (with
    ``--opts`` as an alias); nothing is added where the parser already has ``opts``."""
    if any(a.dest == "opts" for a in parser._actions):
        return parser
    parser.add_argument("opts", nargs=argparse.REMAINDER, default=[], metavar="KEY VALUE",
                        help="config overrides after the options, e.g. MODEL.WEIGHTS model.pth "
                             "(also accepted after --opts)")
    return parser


def add_common_arguments(parser):
    """:func:`add_dataset_arguments` and :func:`add_override_arguments`."""
    return add_override_arguments(add_dataset_arguments(parser))


def dataset_flags(args):
    """The ``--dataset-coco`` / ``--dataset-voc`` options of ``args`` as a command line, to
    pass them on to another tool (e.g. train_regime.py -> train_net.py)."""
    out = []
    for e in getattr(args, "dataset_coco", None) or []:
        out += ["--dataset-coco", *e]
    for e in getattr(args, "dataset_voc", None) or []:
        out += ["--dataset-voc", *e]
    return out


def inference_cfg(args, device=None):
    """The frozen config of an inference tool (:func:`ssd_r34.engine.setup_inference_cfg`)
    from ``args.config_file``, ``args.opts`` and the data set options, with the data sets
    registered."""
    from ..engine.predictor import setup_inference_cfg

    return setup_inference_cfg(args.config_file, args.opts, device=device,
                               dataset_coco=getattr(args, "dataset_coco", None),
                               dataset_voc=getattr(args, "dataset_voc", None))


def setup_tool_logger():
    """Detectron2's console logger for ssd_r34's messages, plain where stdout is no terminal."""
    setup_logger(name="ssd_r34")
    plain_logs_off_terminal()


