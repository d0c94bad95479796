"""The GPU branches of ssd_r34, on CUDA (marked ``cuda``: skipped without a CUDA device and
counted as skipped; ``benchmarks/gpu_check.py`` runs them on a GPU machine, docs/gpu.md):
per-class NMS by ``batched_nms`` off the CPU, Detectron2's AMPTrainer in float16 and bfloat16,
``nn.SyncBatchNorm`` in an NCCL process group, the folded-BatchNorm inference copy following
the model between CPU and GPU, export of a model on the GPU, and the full-size 1200x1200 model
against CPU in inference and in a training step.

CPU and GPU results are compared with TF32 off (``no_tf32``): network outputs within the
channels-last tolerance of tests/layers/test_speed_options.py, detections within
``assert_close_detections``'s, on weights whose logits are in a
trained model's range (``trained_range``: random heads saturate the softmax, and detections
tied at score 1.0 come out in an arbitrary order)."""
import copy
import math

import pytest
import torch

import reference_impl as ref
from conftest import (NO_WINOGRAD, TINY_MODEL, TINY_TRAIN, free_port, make_cfg, one_sgd_step,
                      synthetic_batch)
from test_speed_options import assert_same_detections, copy_of, detect, images, make_plain

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TINY = [*TINY_TRAIN, "DATASETS.TEST", "()"]
DEVICE = "cuda"  # compared with CPU; "cpu" runs a test's logic by hand on a machine without one


@pytest.fixture
def no_tf32():
    """float32 convolutions and matmuls on the GPU (cuDNN uses TF32 by default)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def on(device, inputs):
    return [{**i, "image": i["image"].to(device)} for i in inputs]


def trained_range():
    """make_plain's model (128x128, BatchNorm statistics randomised) with its heads scaled so
    that logits and box deltas reach about 15 on the test images."""
    plain = make_plain()
    return ref.scale_heads(plain, plain.preprocess_image(images(2, seed=4)).tensor)


def assert_close_detections(a, b, box_tol=1e-2, score_tol=3e-4):
    """Per image: every detection paired with one of its class (ssd_r34.export's
    compare_detections), boxes and scores within tolerance. Scores: the network tolerance
    (1e-5 of the largest logit, about 15) through the softmax, at most twice the largest
    logit change (docs/gpu.md)."""
    from ssd_r34.export import compare_detections

    for x, y in zip(a, b):
        r = compare_detections((x.pred_boxes.tensor, x.scores, x.pred_classes),
                               (y.pred_boxes.tensor, y.scores, y.pred_classes))
        assert r["detections_ref"] >= 10 and r["same_classes"], r
        assert r["max_box_diff"] <= box_tol and r["max_score_diff"] <= score_tol, r


# ---- per-class NMS: batched_nms on the GPU, one nms per class slice on CPU --------------
def crowded_candidates(counts, seed=0):
    """Boxes grouped by class (counts[c] of class c), heavily overlapping within a class."""
    g = torch.Generator().manual_seed(seed)
    n = sum(counts)
    xy = torch.rand(n, 2, generator=g) * 60
    wh = 10 + torch.rand(n, 2, generator=g) * 30
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(n, generator=g) * 0.9 + 0.05
    classes = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    return boxes, scores, classes, torch.tensor(counts)


def test_inference_on_cuda_equals_cpu_with_crowded_classes():
    """SSD.inference (selection, decoding, per-class NMS) on the same network outputs."""
    model = make_plain()
    g = torch.Generator().manual_seed(1)
    R, N = 3000, 2
    anchors = crowded_candidates([R], seed=2)[0] * 2
    loc = torch.randn(N, R, 4, generator=g) * 0.5
    conf = torch.randn(N, R, 81, generator=g) * 2.0
    conf[..., 3] += 4.0  # classes with more than TOPK_CANDIDATES_TEST candidates
    conf[..., 7] += 3.5
    want = model.inference(loc, conf, anchors, (128, 128))
    got = copy.deepcopy(model).cuda().inference(loc.cuda(), conf.cuda(), anchors.cuda(),
                                                (128, 128))
    assert all(r.scores.device.type == "cuda" for r in got)
    assert_same_detections(want, [r.to("cpu") for r in got], box_tol=1e-3, score_tol=1e-6)


# ---- mixed precision: Detectron2's AMPTrainer -------------------------------------------
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_amp_trainer_trains_on_cuda_with_float32_losses_and_master_weights(tmp_path, dtype):
    from detectron2.engine import AMPTrainer

    from ssd_r34.engine import SSDTrainer

    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    cfg = make_cfg("configs/ssd_r34_shapes.yaml", *TINY, "MODEL.DEVICE", "cuda",
                   "SOLVER.MAX_ITER", "3", "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE",
                   dtype, "OUTPUT_DIR", str(tmp_path))
    trainer = SSDTrainer(cfg)
    step = trainer._trainer
    assert type(step) is AMPTrainer
    assert step.precision == getattr(torch, dtype)
    assert step.grad_scaler.is_enabled() == (dtype == "float16")  # bf16 needs no scaling
    model = trainer.model
    assert next(model.parameters()).device.type == "cuda"
    seen = {}
    model.head.register_forward_hook(
        lambda m, i, out: seen.setdefault("head", {t.dtype for t in out[0] + out[1]}))
    model.register_forward_hook(
        lambda m, i, out: seen.setdefault("losses", {k: (v.dtype, v.item())
                                                     for k, v in out.items()}))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 3
    assert seen["head"] == {getattr(torch, dtype)}  # the network ran in the AMP dtype ...
    assert {d for d, _ in seen["losses"].values()} == {torch.float32}  # ... the losses in fp32
    assert all(math.isfinite(v) for _, v in seen["losses"].values())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k, _ in model.named_parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the checkpoint holds the scaler's state (fp16), and --resume reads it
    assert (tmp_path / "model_final.pth").exists()
    resumed = SSDTrainer(cfg.clone())
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3
    if dtype == "float16":
        assert resumed._trainer.grad_scaler.get_scale() == step.grad_scaler.get_scale()


# ---- SyncBN: nn.SyncBatchNorm in an NCCL group ------------------------------------------
def test_syncbn_in_a_one_process_nccl_group_equals_batchnorm(no_tf32):
    """MODEL.RESNETS.NORM SyncBN builds nn.SyncBatchNorm; in a group of one process over
    NCCL a training step gives what BatchNorm2d gives (same weights, same batch), and the
    eval-mode SyncBNs fold into the inference copy."""
    import torch.distributed as dist
    from detectron2.modeling import build_model

    if not dist.is_nccl_available():
        pytest.skip("PyTorch built without NCCL")
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{free_port()}",
                            world_size=1, rank=0)
    try:
        models = {}
        for norm in ("SyncBN", "BN"):
            torch.manual_seed(0)
            models[norm] = build_model(make_cfg("configs/Base-SSD-R34.yaml", *TINY_MODEL,
                                                "MODEL.DEVICE", "cuda", "MODEL.RESNETS.NORM",
                                                norm)).train()
        sync, bn = models["SyncBN"], models["BN"]
        assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in sync.modules()) == 29
        bn.load_state_dict(sync.state_dict())
        batch = on("cuda", synthetic_batch(seed=7))
        for m in (sync, bn):
            one_sgd_step(m, batch)
        want = bn.state_dict()
        for k, v in sync.state_dict().items():
            torch.testing.assert_close(v, want[k], rtol=1e-4, atol=1e-5, msg=k)
        assert int(sync.state_dict()["backbone.stem.conv1.norm.num_batches_tracked"]) == 1
        sync.eval()
        bn.eval()
        x = torch.randn(1, 3, 64, 64, device="cuda")
        with torch.no_grad():
            a, b = sync.forward_network(x), bn.forward_network(x)
        folded = sync._folded_backbone[2]
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in folded.modules())
        for got, want in zip(a[:2], b[:2]):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * want.abs().max().item())
    finally:
        dist.destroy_process_group()


# ---- the folded inference copy across devices -------------------------------------------
def test_folded_copy_follows_the_model_to_cuda_and_back(no_tf32):
    fast = copy_of(trained_range(), *NO_WINOGRAD)
    inputs = images(2, seed=4)
    on_cpu = detect(fast, inputs)
    cpu_copy = fast._folded_backbone[2]
    assert next(cpu_copy.parameters()).device.type == "cpu"
    fast.to("cuda")
    on_gpu = detect(fast, on("cuda", inputs))
    gpu_copy = fast._folded_backbone[2]
    assert gpu_copy is not cpu_copy  # rebuilt: the weights moved
    assert all(p.device.type == "cuda" for p in gpu_copy.parameters())
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in gpu_copy.parameters() if p.dim() == 4)
    assert_close_detections(on_cpu, [r.to("cpu") for r in on_gpu])
    detect(fast, on("cuda", inputs))
    assert fast._folded_backbone[2] is gpu_copy  # cached while nothing changes
    fast.to("cpu")
    back = detect(fast, inputs)
    assert all(p.device.type == "cpu" for p in fast._folded_backbone[2].parameters())
    assert_close_detections(on_cpu, back, box_tol=1e-4, score_tol=1e-6)


# ---- the released 1200x1200 shape: inference and a training step against CPU -------------
def test_full_size_model_on_cuda_equals_cpu(no_tf32):
    """configs/ssd_r34_1200.yaml (15130 default boxes), default options on both devices, same
    weights (BatchNorm statistics randomised, heads in a trained model's range) and 2 images:
    box deltas and logits within 1e-5 of their largest magnitude, detections within
    ``assert_close_detections``' tolerances; a training step's losses within 1e-5 or 1e-5
    relative, ``head.conf.0.weight``'s gradient within 1e-4 + 1e-3 relative."""
    from detectron2.modeling import build_model

    cfg = make_cfg("configs/ssd_r34_1200.yaml", "MODEL.RESNETS.NORM", "BN", *NO_WINOGRAD)
    g = torch.Generator().manual_seed(0)
    inputs = [{"image": torch.randint(0, 256, (3, 1200, 1200), generator=g, dtype=torch.uint8),
               "height": 1200, "width": 1200} for _ in range(2)]
    torch.manual_seed(0)
    cpu = build_model(cfg).eval()
    ref.randomise_batchnorm(cpu, seed=1)
    x = cpu.preprocess_image(inputs).tensor
    ref.scale_heads(cpu, x)
    cfg.MODEL.DEVICE = DEVICE
    dev = build_model(cfg).eval()
    dev.load_state_dict(cpu.state_dict())
    with torch.no_grad():
        for want, got in zip(cpu.forward_network(x)[:2], dev.forward_network(x.to(DEVICE))[:2]):
            torch.testing.assert_close(got.cpu(), want, rtol=0,
                                       atol=1e-5 * want.abs().max().item())
    assert_close_detections(detect(cpu, inputs), [r.to("cpu") for r in
                                                  detect(dev, on(DEVICE, inputs))])
    losses, grads = [], []
    for model, device in ((cpu, "cpu"), (dev, DEVICE)):
        model = copy.deepcopy(model).train()
        out = model(on(device, synthetic_batch(seed=5, size=1200)))
        sum(out.values()).backward()
        losses.append({k: v.item() for k, v in out.items()})
        grads.append(model.head.conf[0].weight.grad.cpu())
    assert all(math.isfinite(v) for v in losses[1].values())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-5)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-3, atol=1e-4)


# ---- export of a model on the GPU -------------------------------------------------------
def test_export_of_a_cuda_model_matches_its_eager_detections(tmp_path, no_tf32):
    """TorchScript traced on the GPU runs there; ONNX exported from the GPU model runs in
    onnxruntime on CPU; both give the eager GPU model's detections."""
    from ssd_r34.export import (SSDExportModule, compare_detections, export_onnx,
                                export_torchscript, load_exported)

    model = copy_of(trained_range(), *NO_WINOGRAD).to("cuda").eval()
    module = SSDExportModule(model)
    image = images(1, seed=4)[0]["image"][None].cuda()  # (1, 3, 128, 128) uint8
    with torch.no_grad():
        want = module(image)
    assert want[0].device.type == "cuda" and len(want[1]) >= 10

    path = export_torchscript(module, image, str(tmp_path / "model.ts"))
    traced = torch.jit.load(path, map_location="cuda")
    with torch.no_grad():
        got = traced(image)
    r = compare_detections(want, got)
    assert r["same_classes"] and r["max_box_diff"] < 1e-3 and r["max_score_diff"] < 3e-4, r

    path = export_onnx(module, image, str(tmp_path / "model.onnx"))
    got = load_exported("onnx", path)(image.cpu())
    r = compare_detections(want, got)
    assert r["same_classes"] and r["max_box_diff"] < 1e-2 and r["max_score_diff"] < 3e-4, r
