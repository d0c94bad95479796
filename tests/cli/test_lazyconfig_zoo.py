"""LazyConfig (configs/*.py) builds the model the yaml configs build; the model-zoo API finds
the configs and the released weights (a local file, never downloaded)."""
import filecmp
import os

import pytest
import torch

from conftest import ROOT

PAIRS = ["ssd_r34_shapes", "ssd_r34_300", "ssd_r34_1200", "ssd_r34_800x1200"]


def _yaml_and_lazy(name):
    from detectron2.config import instantiate
    from detectron2.modeling import build_model

    from ssd_r34 import model_zoo

    ycfg = model_zoo.get_config(f"{name}.yaml")
    lcfg = model_zoo.get_config(f"{name}.py")
    # same device and norm on both sides (the zoo maps SyncBN to naiveSyncBN on CPU)
    ycfg.MODEL.DEVICE = "cpu"
    lcfg.model.backbone.norm = ycfg.MODEL.RESNETS.NORM
    # Winograd on both sides is the default; off here, so that no test waits for the C++
    # build (the modules are the same classes either way: WinogradConv2d is a Conv2d).
    assert ycfg.MODEL.SSD.WINOGRAD and lcfg.model.backbone.winograd
    ycfg.MODEL.SSD.WINOGRAD = False
    lcfg.model.backbone.winograd = False
    torch.manual_seed(0)
    a = build_model(ycfg)
    torch.manual_seed(0)
    b = instantiate(lcfg.model)
    return ycfg, lcfg, a, b


def _describe(aug):
    jitter = getattr(aug, "_jitter", None)  # RandomColorJitter: torchvision's repr has values
    return repr(jitter) if jitter is not None else repr(aug)


@pytest.mark.parametrize("name", PAIRS)
def test_yaml_and_python_configs_build_the_same_model(name):
    ycfg, lcfg, a, b = _yaml_and_lazy(name)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}
    assert b.input_size == tuple(ycfg.INPUT.FIXED_SIZE)
    assert [type(m).__name__ for m in a.modules()] == [type(m).__name__ for m in b.modules()]
    for key in ("test_score_thresh", "test_topk_candidates", "test_nms_thresh",
                "max_detections_per_image", "channels_last", "fuse_bn_inference",
                "num_classes", "iou_threshold", "neg_pos_ratio"):
        assert getattr(a, key) == getattr(b, key), key
    assert a.num_boxes() == b.num_boxes()
    # the data side: the same augmentations at the same size
    from ssd_r34.data import build_ssd_augmentations
    from detectron2.config import instantiate

    for is_train, split in ((True, "train"), (False, "test")):
        ours = instantiate(lcfg.dataloader[split].mapper.augmentations)
        want = build_ssd_augmentations(ycfg, is_train)
        assert [_describe(x) for x in ours] == [_describe(x) for x in want]
    assert lcfg.dataloader.train.dataset.names in ycfg.DATASETS.TRAIN


@pytest.mark.parametrize("name", ["ssd_r34_shapes", "ssd_r34_300"])
def test_yaml_and_python_models_give_the_same_outputs_for_the_same_weights(name):
    _, _, a, b = _yaml_and_lazy(name)
    torch.manual_seed(1)
    for p in a.parameters():  # not the seed's init: a mismatch in wiring would show
        p.data.normal_(0, 0.05)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    h, w = a.input_size
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        x = [{"image": img, "height": h, "width": w}]
        ra, rb = a(x)[0]["instances"], b(x)[0]["instances"]
        la, lb = a.forward_network(a.preprocess_image(x).tensor), \
            b.forward_network(b.preprocess_image(x).tensor)
    for u, v in zip(la, lb):
        torch.testing.assert_close(u, v)
    assert len(ra) == len(rb) > 0
    torch.testing.assert_close(ra.pred_boxes.tensor, rb.pred_boxes.tensor)
    torch.testing.assert_close(ra.scores, rb.scores)


def test_model_zoo_config_files_and_errors(tmp_path, monkeypatch):
    from ssd_r34 import model_zoo

    path = model_zoo.get_config_file("ssd_r34_1200.yaml")
    assert os.path.isfile(path) and filecmp.cmp(path, os.path.join(ROOT, "configs",
                                                                     "ssd_r34_1200.yaml"))
    assert model_zoo.get_config_file("ssd_r34_1200") == path
    assert model_zoo.get_config_file("configs/ssd_r34_shapes.py").endswith("ssd_r34_shapes.py")
    assert {"ssd_r34_300.yaml", "ssd_r34_300.py", "Base-SSD-R34.yaml"} <= \
        set(model_zoo.list_configs())
    with pytest.raises(RuntimeError, match="available: .*ssd_r34_1200.yaml"):
        model_zoo.get_config_file("ssd_r34_9000.yaml")
    cfg = model_zoo.get_config("ssd_r34_1200.yaml")
    assert cfg.INPUT.FIXED_SIZE == (1200, 1200) and cfg.MODEL.WEIGHTS == ""
    # trained=True: nothing downloaded; the message says what to download and where to put it
    monkeypatch.delenv(model_zoo.WEIGHTS_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="zenodo.org/record/3236545/files/"
                                                "resnet34-ssd1200.pytorch.*SSD_R34_MLPERF_WEIGHTS"):
        model_zoo.get_config("ssd_r34_1200.yaml", trained=True)
    monkeypatch.setenv(model_zoo.WEIGHTS_ENV, str(tmp_path / "missing.pytorch"))
    with pytest.raises(FileNotFoundError, match="does not exist: download"):
        model_zoo.get("ssd_r34_1200.yaml", trained=True)
    with pytest.raises(ValueError, match="No released weights for ssd_r34_300.yaml"):
        model_zoo.get_config("ssd_r34_300.yaml", trained=True)


def test_model_zoo_get_trained_converts_a_local_mlperf_file(tmp_path, monkeypatch):
    """trained=True for the 1200 model: a file in the MLPerf layout (the reference's module
    names, as tests/checkpoint/test_checkpoint.py makes them) named by SSD_R34_MLPERF_WEIGHTS is
    converted and loaded, for the yaml and the LazyConfig file alike."""
    import reference_impl as ref

    from ssd_r34 import model_zoo
    from ssd_r34.checkpoint.mlperf import convert_mlperf_state_dict, find_mlperf_checkpoint

    torch.manual_seed(3)
    sd = ref.ReferenceSSDR34(81, (3, 3, 2, 2, 2, 2)).state_dict()
    path = tmp_path / "resnet34-ssd1200.pytorch"
    torch.save(sd, path)
    expected = convert_mlperf_state_dict(find_mlperf_checkpoint(sd))
    monkeypatch.setenv(model_zoo.WEIGHTS_ENV, str(path))
    import ssd_r34.modeling.backbone as backbone

    monkeypatch.setattr(backbone, "winograd_available", lambda: False)  # no C++ build here
    for name in ("ssd_r34_1200.yaml", "ssd_r34_1200.py"):
        model = model_zoo.get(name, trained=True, device="cpu")
        assert not model.training
        got = model.state_dict()
        for k, v in expected.items():
            assert torch.equal(got[k], v), f"{name}: {k}"


def test_lazyconfig_train_net_trains_and_evaluates(tmp_path, shapes_val_4):
    """tools/lazyconfig_train_net.py's code on the shapes LazyConfig, made tiny by overrides:
    trains, evaluates (on 4 images) after train.eval_iters and at the end, writes
    model_final."""
    import json

    from ssd_r34.cli import lazyconfig_train_net

    tiny = ["model.input_size=[64,64]", "model.backbone.strides=[1,1,1,1,1,1]",
            "model.head.stride=1", "model.backbone.winograd=False",
            "dataloader.train.mapper.augmentations.size=[64,64]",
            "dataloader.test.mapper.augmentations.size=[64,64]",
            "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
            "dataloader.test.num_workers=0", f"dataloader.test.dataset.names={shapes_val_4}",
            f"dataloader.evaluator.output_dir={tmp_path / 'eval'}",
            "train.max_iter=2", "train.eval_iters=[1]",
            "train.log_period=1", f"train.output_dir={tmp_path}"]
    argv = ["--config-file", os.path.join(ROOT, "configs", "ssd_r34_shapes.py"), *tiny]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = lazyconfig_train_net.main(argv)
    finally:
        torch.set_num_threads(threads)  # later tests run with the default thread count
    assert trainer.iter == 2
    assert (tmp_path / "model_final.pth").exists()
    evals = [json.loads(line) for line in open(tmp_path / "metrics.json")
             if "bbox/AP" in line]
    # after the first iteration (index 0), and after training (Detectron2 records it at max_iter)
    assert [e["iteration"] for e in evals] == [0, 2]
