import os
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The built-in data set is generated (deterministically) here, before ssd_r34 is imported.
os.environ.setdefault("SSD_R34_DATASETS", os.path.join(tempfile.gettempdir(), "ssd_r34_test_data"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The independent re-implementation of the MLPerf reference, shared with benchmarks/.
sys.path.insert(0, os.path.join(ROOT, "reference"))
sys.path.insert(0, ROOT)

# ---- shared config overrides (KEY VALUE lists for make_cfg and the tools' command lines) ----
CONFIG = "configs/ssd_r34_shapes.yaml"
# The tiny network: 64x64 input, stride 1 at every level (1616 default boxes).
TINY_NET = ["INPUT.FIXED_SIZE", "(64, 64)", "MODEL.SSD.STRIDES", "[1, 1, 1, 1, 1, 1]"]
# Direct convolutions: no C++ Winograd build (tests/layers/test_winograd.py tests those).
NO_WINOGRAD = ["MODEL.SSD.WINOGRAD", "False"]
TINY = [*TINY_NET, *NO_WINOGRAD]
# A short in-process training of the tiny network: no loader workers, batches of 2, no warm-up.
TINY_TRAIN = [*TINY_NET, "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2",
              "SOLVER.WARMUP_ITERS", "0", "SOLVER.CHECKPOINT_PERIOD", "1000", "SEED", "1"]
# The small network: 96x96, one stride 2 (a few steps of training find some shapes).
SMALL = ["INPUT.FIXED_SIZE", "(96, 96)", "MODEL.SSD.STRIDES", "[1, 1, 2, 1, 1, 1]",
         "DATALOADER.NUM_WORKERS", "0"]
# The tiny network with the three classes of synthetic_batch.
TINY_MODEL = [*TINY_NET, "MODEL.SSD.NUM_CLASSES", "3"]


def make_cfg(config="configs/Base-SSD-R34.yaml", *opts):
    from ssd_r34 import get_ssd_cfg

    cfg = get_ssd_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


def free_port():
    """A free TCP port on 127.0.0.1 (a process group's rendezvous)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_batch(seed, n=2, size=64):
    """n images with one or two boxes each, drawn from ``seed``."""
    import torch
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n):
        k = int(torch.randint(1, 3, (), generator=g))
        xy = torch.rand(k, 2, generator=g) * size * 0.5
        wh = 8 + torch.rand(k, 2, generator=g) * size * 0.4
        inst = Instances((size, size))
        inst.gt_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.gt_classes = torch.randint(0, 3, (k,), generator=g)
        image = torch.randint(0, 256, (3, size, size), generator=g, dtype=torch.uint8)
        batch.append({"image": image, "instances": inst, "height": size, "width": size})
    return batch


def one_sgd_step(model, batch, lr=0.01):
    """One SGD step of ``model`` (training mode) on ``batch``."""
    import torch

    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss = sum(model(batch).values())
    opt.zero_grad()
    loss.backward()
    opt.step()


def damped_head_weights(cfg, folder):
    """Save random weights of ``cfg``'s model (seed 0) with the head scaled by 0.02 to
    ``folder``/model.pth and return the path: scores spread over (0, 1) and boxes stay near
    the default boxes, so that the order of detections and NMS are well defined (an untrained
    head saturates the softmax at exactly 1.0, where ties make any order right)."""
    import torch
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for p in model.head.parameters():
            p.mul_(0.02)
    path = os.path.join(str(folder), "model.pth")
    torch.save({"model": model.state_dict()}, path)
    return path


def conv_multiply_adds(model, size):
    """Multiply-adds of every Conv2d of ``model``'s network on one (1, 3, *size) image,
    counted from the output shapes: what fvcore's conv count should give."""
    import math

    import torch

    macs = []

    def hook(conv, _inputs, out):
        macs.append(out.numel() * conv.in_channels // conv.groups * math.prod(conv.kernel_size))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model.forward_network(torch.zeros(1, 3, *size))
    finally:
        for h in handles:
            h.remove()
    return sum(macs)


@pytest.fixture
def cfg_factory():
    return make_cfg


@pytest.fixture(scope="session", autouse=True)
def torch_threads():
    """One torch intra-op thread for the session (SSD_R34_TEST_THREADS=N to change): the
    tests run tiny models, which a second thread hardly speeds up, and on a busy or
    CPU-limited machine OpenMP threads waiting for each other make them several times
    slower. (Subprocesses get OMP_NUM_THREADS=1 from their tests.)"""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("SSD_R34_TEST_THREADS", "1")))
    yield n
    torch.set_num_threads(n)


@pytest.fixture
def default_threads(torch_threads):
    """torch's own thread count for one test (a float32 error bound measured with it)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module of tiny models (``pytestmark =
    pytest.mark.usefixtures("one_thread")``), whatever SSD_R34_TEST_THREADS says. The count
    is restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shapes_val_4():
    """The data set ``shapes_val_4`` (returned): the first 4 images of shapes_val, for an
    evaluation in a second or two (all 200 take tens of seconds)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    import ssd_r34  # noqa: F401  (registers shapes_val)

    if "shapes_val_4" not in DatasetCatalog.list():
        val = DatasetCatalog.get("shapes_val")
        DatasetCatalog.register("shapes_val_4", lambda: val[:4])
        meta = MetadataCatalog.get("shapes_val")
        MetadataCatalog.get("shapes_val_4").set(
            thing_classes=meta.thing_classes,
            thing_dataset_id_to_contiguous_id=meta.thing_dataset_id_to_contiguous_id)
    return "shapes_val_4"


@pytest.fixture(scope="session")
def short_run(tmp_path_factory, shapes_val_4):
    """The trained model shared by the session: three SSDTrainer iterations of the SMALL
    network (batches of 2), then the evaluation on ``shapes_val_4``. The folder holds
    model_final.pth, config.yaml and metrics.json (losses, lr, bbox/AP and per-class APs).
    Read it, do not write into it."""
    import torch

    from ssd_r34.engine import SSDTrainer

    out = tmp_path_factory.mktemp("short_run")
    torch.manual_seed(0)
    cfg = make_cfg(CONFIG, *SMALL, "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3",
                   "SOLVER.WARMUP_ITERS", "0", "TEST.EVAL_PERIOD", "3",
                   "DATASETS.TEST", f"('{shapes_val_4}',)", "OUTPUT_DIR", str(out))
    trainer = SSDTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert (out / "model_final.pth").exists() and (out / "metrics.json").exists()
    with open(out / "config.yaml", "w") as f:
        f.write(cfg.dump())
    return out
