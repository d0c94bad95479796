"""Run the MLPerf training reference's three-stage regime of the released 1200x1200 model
(configs chained by REGIME.PREVIOUS_STAGE), one train_net command a stage (docs/tools.md)."""
import os
import shlex
import subprocess
import sys

from ..config import get_ssd_cfg
from . import args as cli


def get_parser():
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config-file", default="ssd_r34_1200.yaml",
                   help="the last stage (a file or a model-zoo name)")
    p.add_argument("--num-gpus", type=int, nargs="+", help="processes: one, or one a stage "
                   "(default: REGIME.NUM_GPUS)")
    p.add_argument("--previous-iter", type=int, help="hand-over iteration (default: "
                   "REGIME.PREVIOUS_ITER)")
    p.add_argument("--output-root", help="stage N writes to OUTPUT_ROOT/<config name>")
    p.add_argument("--stage-opts", nargs=2, action="append", default=[],
                   metavar=("N", "'KEY VALUE ...'"), help="overrides of stage N (from 1)")
    p.add_argument("--full-stages", action="store_true",
                   help="every stage's own SOLVER.MAX_ITER (hand over a periodic checkpoint)")
    p.add_argument("--resume", action="store_true",
                   help="skip finished stages (model_final.pth), resume the others")
    p.add_argument("--dist-url", default="auto", help="as train_net's (one machine)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    return cli.add_common_arguments(p)  # data sets and overrides: passed on to every stage


def parse_args(argv=None):
    """The parsed options, with ``stage_opts`` as [[N, KEY, VALUE, ...]]."""
    p = get_parser()
    args = p.parse_args(argv)
    args.config_file = cli.resolve_config_file(args.config_file)
    args.stage_opts = [[n] + shlex.split(opts) for n, opts in args.stage_opts]
    for n, *opts in args.stage_opts:
        if not n.isdigit() or len(opts) % 2:
            p.error(f"--stage-opts needs a stage number and a string of KEY VALUE pairs, got "
                    f"{n} {opts}")
    return args


def load_cfg(path, opts):
    cfg = get_ssd_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg


def stage_chain(last_config):
    """Config paths from the first stage to ``last_config``."""
    chain = [os.path.abspath(last_config)]
    while True:
        prev = load_cfg(chain[0], []).REGIME.PREVIOUS_STAGE
        if not prev:
            return chain
        prev = os.path.normpath(os.path.join(os.path.dirname(chain[0]), prev))
        if prev in chain:
            raise ValueError(f"REGIME.PREVIOUS_STAGE loops: {prev}")
        chain.insert(0, prev)


def handover_checkpoint(cfg, iters):
    """The file a stage with config ``cfg`` holds after ``iters`` iterations."""
    if iters == cfg.SOLVER.MAX_ITER:
        return os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    if iters < cfg.SOLVER.MAX_ITER and iters % cfg.SOLVER.CHECKPOINT_PERIOD == 0:
        return os.path.join(cfg.OUTPUT_DIR, f"model_{iters - 1:07d}.pth")
    raise ValueError(f"{cfg.OUTPUT_DIR}: no checkpoint after {iters} iterations (SOLVER.MAX_ITER "
                     f"{cfg.SOLVER.MAX_ITER}, SOLVER.CHECKPOINT_PERIOD "
                     f"{cfg.SOLVER.CHECKPOINT_PERIOD}).")


def plan(args):
    """[(config, num_gpus, opts, effective cfg)] for every stage, in order."""
    chain = stage_chain(args.config_file)
    n = len(chain)
    gpus = args.num_gpus or [None]
    if len(gpus) not in (1, n):
        raise ValueError(f"--num-gpus: one number or {n}, got {gpus}")
    gpus = gpus * n if len(gpus) == 1 else gpus
    user = {i: list(args.opts) for i in range(1, n + 1)}
    for so in args.stage_opts:
        if int(so[0]) not in user:
            raise ValueError(f"--stage-opts {so[0]}: there are {n} stages")
        user[int(so[0])] += so[1:]
    # handover[i]: stage i (> 1) starts from stage i - 1 after this many iterations.
    handover = {i: args.previous_iter or load_cfg(chain[i - 1], user[i]).REGIME.PREVIOUS_ITER
                for i in range(2, n + 1)}
    bad = [chain[i - 1] for i, it in handover.items() if it <= 0]
    if bad:
        raise ValueError(f"{bad[0]}: REGIME.PREVIOUS_ITER must be > 0 (or give --previous-iter)")
    stages = []
    for i, path in enumerate(chain, 1):
        opts = []
        if args.output_root:
            name = os.path.splitext(os.path.basename(path))[0]
            opts += ["OUTPUT_DIR", os.path.join(args.output_root, name)]
        if i < n and not args.full_stages:  # later iterations would not be used
            opts += ["SOLVER.MAX_ITER", str(handover[i + 1])]
        if i > 1:
            opts += ["MODEL.WEIGHTS", handover_checkpoint(stages[-1][3], handover[i])]
        opts += user[i]
        cfg = load_cfg(path, opts)
        stages.append((path, gpus[i - 1] or cfg.REGIME.NUM_GPUS, opts, cfg))
    return stages


def command(path, num_gpus, opts, args):
    """The train_net command line of a stage."""
    cmd = [sys.executable, "-m", "ssd_r34.cli.train_net", "--config-file", path,
           "--num-gpus", str(num_gpus)]
    if num_gpus > 1:
        cmd += ["--dist-url", args.dist_url]
    if args.resume:
        cmd.append("--resume")
    for flag in ("coco", "voc"):  # the data sets, as given
        for e in getattr(args, f"dataset_{flag}"):
            cmd += [f"--dataset-{flag}", *e]
    return cmd + list(opts)


def finished(cfg):
    """Whether the stage of ``cfg`` has saved model_final.pth."""
    try:
        with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")) as f:
            return f.read().strip() == "model_final.pth"
    except OSError:
        return False


def main(argv=None):
    """Returns: 0, the failed stage's exit status, or 2 for a bad plan."""
    args = parse_args(argv)
    try:
        stages = plan(args)
    except ValueError as e:
        print(f"train_regime: {e}", file=sys.stderr)
        return 2
    for i, (path, num_gpus, opts, cfg) in enumerate(stages, 1):
        cmd = command(path, num_gpus, opts, args)
        print(f"# stage {i}/{len(stages)}: {os.path.basename(path)}, {num_gpus} process(es), "
              f"{cfg.SOLVER.MAX_ITER} iterations -> {cfg.OUTPUT_DIR}", flush=True)
        print(shlex.join(cmd), flush=True)
        if args.dry_run:
            continue
        if args.resume and finished(cfg):
            print(f"# stage {i} already finished (model_final.pth): skipped", flush=True)
            continue
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"# stage {i} failed (exit status {rc}); fix and rerun with --resume",
                  file=sys.stderr)
            return rc
    return 0
