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



def make_cfg(config="configs/Base-SSD-R34.yaml", *opts):
    from ssd_r34 import get_ssd_cfg

    cfg = get_ssd_cfg()
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *opts])
    return cfg


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


@pytest.fixture
def cfg_factory():
    return make_cfg


@pytest.fixture(scope="module")
def one_thread():
    """One torch intra-op thread for a module of tiny models (``pytestmark =
    pytest.mark.usefixtures("one_thread")``): as fast, and far faster on a busy machine (no
    OpenMP threads waiting for each other). The count is restored after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
