"""Your own COCO-format data set through the command lines: a tiny set made here (category
ids 7 and 9, image ids from 101, no "info" / "licenses", JPEG and PNG of mixed sizes) is
trained on with ``tools/train_net.py --num-gpus 2 --dataset-coco ...`` (two gloo processes on
CPU), evaluated, and run through ``demo.py --input`` and ``export_model.py``; class names and
ids are checked in every output. Also: the Python recipe of docs/data.md, Pascal VOC folders,
one override syntax in every tool, and errors that name the bad entry."""
import importlib
import json
import os
import re
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import NO_WINOGRAD, ROOT, TINY_NET

CONFIG = os.path.join(ROOT, "configs", "ssd_r34_shapes.yaml")
CATEGORIES = [{"id": 9, "name": "disc"}, {"id": 7, "name": "square"}]  # not in id order
NAME_OF = {7: "square", 9: "disc"}
# contiguous id -> (category id, name): classes in category-id order (load_coco_json's)
CLASSES = [(7, "square"), (9, "disc")]
TINY = ["MODEL.DEVICE", "cpu", *TINY_NET, "DATALOADER.NUM_WORKERS", "0",
        "MODEL.SSD.NUM_CLASSES", "2", *NO_WINOGRAD]
SIZES = [(96, 72), (64, 80), (80, 80), (112, 64), (72, 96), (88, 64)]  # (width, height)
ANSI = re.compile(r"\x1b\[")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_image(path, size, rng):
    """A dark image with a bright square (category 7) and/or disc (category 9); returns the
    COCO annotations (without ids)."""
    w, h = size
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 60, 3)))
    draw = ImageDraw.Draw(img)
    anns = []
    for cid, (x0, y0) in ((7, (2, 2)), (9, (w // 2, h // 2))):
        bw, bh = int(rng.integers(w // 4, w // 2 - 2)), int(rng.integers(h // 4, h // 2 - 2))
        box = [x0, y0, x0 + bw, y0 + bh]
        fill = tuple(int(c) for c in rng.integers(160, 256, 3))
        (draw.rectangle if cid == 7 else draw.ellipse)(box, fill=fill)
        anns.append({"category_id": cid, "bbox": [x0, y0, bw + 1, bh + 1], "area": bw * bh,
                     "iscrowd": 0})
    img.save(path, quality=95)
    return anns


def make_coco_set(root):
    """imgs/ (JPEG and PNG, six sizes), train.json (4 images) and val.json (2 images)."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "imgs"))
    splits = {"train": [], "val": []}
    for i, size in enumerate(SIZES):
        name = f"img{i}.{'png' if i % 2 else 'jpg'}"
        anns = make_image(os.path.join(root, "imgs", name), size, rng)
        splits["train" if i < 4 else "val"].append(
            ({"id": 101 + i, "file_name": name, "width": size[0], "height": size[1]}, anns))
    for split, items in splits.items():
        images, annotations = [], []
        for image, anns in items:
            images.append(image)
            for a in anns:
                annotations.append(dict(a, id=1000 + len(annotations), image_id=image["id"]))
        with open(os.path.join(root, f"{split}.json"), "w") as f:  # no "info", no "licenses"
            json.dump({"images": images, "annotations": annotations, "categories": CATEGORIES}, f)
    return root


@pytest.fixture(scope="module")
def own_set(tmp_path_factory):
    return str(make_coco_set(str(tmp_path_factory.mktemp("own_set"))))


def coco_flags(root, prefix="mine"):
    return ["--dataset-coco", f"{prefix}_train", os.path.join(root, "train.json"),
            os.path.join(root, "imgs"),
            "--dataset-coco", f"{prefix}_val", os.path.join(root, "val.json"),
            os.path.join(root, "imgs")]


def load_tool(name):
    """ssd_r34.cli.<name>: tools/<name>.py's code."""
    return importlib.import_module(f"ssd_r34.cli.{name}")


def run(cmd, cwd=ROOT, timeout=400):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-4000:]
    return r.stdout


def check_results(path):
    """Detectron2's coco_instances_results.json: category ids are the json's (7, 9)."""
    results = json.load(open(path))
    assert results, "no detection to check"
    assert {d["category_id"] for d in results} <= {7, 9}
    assert {d["image_id"] for d in results} <= {105, 106}
    return results


def check_training_run(out_dir, stdout, world):
    log = open(os.path.join(out_dir, "log.txt")).read()
    for text in (stdout, log):  # plain logs: stdout is a pipe here, log.txt a file
        assert not ANSI.search(text), text[ANSI.search(text).start() - 200:][:400]
    assert log.count("Running with full config") == 1  # no doubled handlers
    assert f"World size: {world}" in log
    # Detectron2's per-category table names the classes of the json
    assert re.search(r"\| *square *\| *[\d.na]+ *\| *disc", log) or \
        re.search(r"\| *disc *\| *[\d.na]+ *\| *square", log), log[-3000:]
    metrics = [json.loads(line) for line in open(os.path.join(out_dir, "metrics.json"))]
    assert any("bbox/AP-square" in m and "bbox/AP-disc" in m for m in metrics)
    return check_results(os.path.join(out_dir, "inference", "mine_val",
                                      "coco_instances_results.json"))


# One process in `make test`; two (gloo) in `make test-all`.
PROCESSES = [1, pytest.param(2, marks=pytest.mark.slow)]


@pytest.mark.parametrize("processes", PROCESSES)
def test_train_evaluate_demo_and_export_on_your_own_coco_set(own_set, tmp_path, processes):
    out_dir = str(tmp_path / "run")
    weights = os.path.join(out_dir, "model_final.pth")
    stdout = run([sys.executable, os.path.join(ROOT, "tools", "train_net.py"),
                  "--config-file", CONFIG, "--num-gpus", str(processes),
                  "--dist-url", f"tcp://127.0.0.1:{free_port()}", *coco_flags(own_set),
                  "DATASETS.TRAIN", "('mine_train',)", "DATASETS.TEST", "('mine_val',)", *TINY,
                  "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS",
                  "0", "SOLVER.CHECKPOINT_PERIOD", "1000", "OUTPUT_DIR", out_dir])
    check_training_run(out_dir, stdout, world=processes)
    # The saved config names the sets (absolute paths): --eval-only from it needs no flag.
    from ssd_r34.config import get_ssd_cfg

    saved = get_ssd_cfg()
    saved.merge_from_file(os.path.join(out_dir, "config.yaml"))
    assert [tuple(e) for e in saved.DATASETS.COCO] == [
        ("mine_train", os.path.join(own_set, "train.json"), os.path.join(own_set, "imgs")),
        ("mine_val", os.path.join(own_set, "val.json"), os.path.join(own_set, "imgs"))]

    # demo --input: this process has not loaded the set; names come from the json, and the
    # overrides follow --input's paths directly.
    demo = load_tool("demo")
    res = demo.main([
        "--config-file", CONFIG, "--dataset-coco", "mine_val", os.path.join(own_set, "val.json"),
        os.path.join(own_set, "imgs"), "--output", str(tmp_path / "demo"),
        "--confidence-threshold", "0", "--input", os.path.join(own_set, "imgs", "img4.jpg"),
        os.path.join(own_set, "imgs", "img5.png"), "MODEL.WEIGHTS", weights,
        "DATASETS.TEST", "('mine_val',)", *TINY])
    assert len(res["written"]) == 2
    dets = json.load(open(res["json"]))
    assert dets and {d["category_id"] for d in dets} <= {7, 9}
    assert all(d["category_name"] == NAME_OF[d["category_id"]] for d in dets)

    # export: the sample images are DATASETS.TEST[0]'s; classes.json maps the outputs
    export = load_tool("export_model")
    res = export.main([
        "--config-file", CONFIG, "--format", "onnx", "--output", str(tmp_path / "export"),
        "--num-samples", "2", *coco_flags(own_set), "--opts", "MODEL.WEIGHTS", weights,
        "DATASETS.TEST", "('mine_val',)", *TINY])
    assert res["ok"] and len(res["results"]) == 2
    assert json.load(open(res["classes"]))["classes"] == [
        {"id": i, "category_id": cid, "name": name} for i, (cid, name) in enumerate(CLASSES)]


def recipe_from_docs():
    """The Python recipe of docs/data.md (the code block after its marker)."""
    text = open(os.path.join(ROOT, "docs", "data.md")).read()
    m = re.search(r"<!-- recipe: tests/cli/test_own_data.py -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/data.md lost its tested recipe"
    return m.group(1)


@pytest.mark.parametrize("processes", PROCESSES)
def test_the_register_coco_instances_recipe_of_the_docs_runs(own_set, tmp_path, processes):
    code = recipe_from_docs()
    assert len([line for line in code.splitlines() if line.strip()]) <= 15
    script = tmp_path / "my_train.py"
    script.write_text(code)
    # the recipe names a.json, b.json and imgs/ relative to where it runs
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(os.path.join(own_set, "imgs"), work / "imgs")
    os.symlink(os.path.join(own_set, "train.json"), work / "a.json")
    os.symlink(os.path.join(own_set, "val.json"), work / "b.json")
    out_dir = str(tmp_path / "run")
    stdout = run([sys.executable, str(script), "--config-file", CONFIG, "--num-gpus",
                  str(processes), "--dist-url", f"tcp://127.0.0.1:{free_port()}",
                  "DATASETS.TRAIN", "('mine_train',)", "DATASETS.TEST", "('mine_val',)", *TINY,
                  "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "1", "SOLVER.WARMUP_ITERS",
                  "0", "OUTPUT_DIR", out_dir], cwd=str(work))
    check_training_run(out_dir, stdout, world=processes)


# ---- fast checks ------------------------------------------------------------------------
def test_a_json_without_info_and_licenses_evaluates_with_its_own_category_ids(own_set, tmp_path):
    """Ground truth as predictions: AP 100 per class, results with ids 7 / 9 (pycocotools
    2.0.10's loadRes raised KeyError: 'info' for such a json)."""
    import torch
    from detectron2.data import DatasetCatalog
    from detectron2.structures import Boxes, Instances

    from ssd_r34.config import get_ssd_cfg
    from ssd_r34.engine import SSDTrainer

    cfg = get_ssd_cfg()
    cfg.merge_from_list(["DATASETS.COCO", repr(((
        "evalonly_val", os.path.join(own_set, "val.json"), os.path.join(own_set, "imgs")),)),
        "OUTPUT_DIR", str(tmp_path)])
    assert "info" not in json.load(open(os.path.join(own_set, "val.json")))
    evaluator = SSDTrainer.build_evaluator(cfg, "evalonly_val")  # registers DATASETS.COCO
    dicts = DatasetCatalog.get("evalonly_val")
    evaluator.reset()
    for d in dicts:
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                              (a["bbox"] for a in d["annotations"])], dtype=torch.float32)
        inst = Instances((d["height"], d["width"]), pred_boxes=Boxes(boxes),
                         scores=torch.ones(len(boxes)),
                         pred_classes=torch.tensor([a["category_id"] for a in d["annotations"]]))
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    bbox = evaluator.evaluate()["bbox"]
    assert bbox["AP-square"] == pytest.approx(100) and bbox["AP-disc"] == pytest.approx(100)
    results = check_results(tmp_path / "inference" / "evalonly_val" / "coco_instances_results.json")
    # contiguous 0 is category 7 (square), 1 is 9 (disc)
    assert sorted((r["image_id"], r["category_id"]) for r in results) == [
        (105, 7), (105, 9), (106, 7), (106, 9)]


def test_class_names_from_the_json_and_a_warning_for_an_unregistered_test_set(own_set):
    import logging

    from ssd_r34.config import get_ssd_cfg
    from ssd_r34.engine import test_metadata

    cfg = get_ssd_cfg()
    cfg.merge_from_list(["DATASETS.COCO", repr((("names_val", os.path.join(own_set, "val.json"),
                                                 os.path.join(own_set, "imgs")),)),
                         "DATASETS.TEST", "('names_val',)"])
    meta = test_metadata(cfg)  # not loaded: read from the json's categories
    assert meta.thing_classes == ["square", "disc"]
    assert meta.thing_dataset_id_to_contiguous_id == {7: 0, 9: 1}
    from detectron2.data import DatasetCatalog

    DatasetCatalog.get("names_val")  # load_coco_json sets the same values (it would raise)

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("ssd_r34.engine.predictor")
    log.addHandler(handler)
    try:
        cfg.merge_from_list(["DATASETS.TEST", "('not_registered_val',)"])
        assert test_metadata(cfg) is None
    finally:
        log.removeHandler(handler)
    msg = " ".join(r.getMessage() for r in records)
    assert "'not_registered_val' is not a registered data set" in msg and "--dataset-coco" in msg


def test_bad_data_set_entries_fail_naming_the_problem(own_set, tmp_path):
    from ssd_r34.config import get_ssd_cfg
    from ssd_r34.data import register_dataset_files

    def cfg_with(key, value):
        cfg = get_ssd_cfg()
        cfg.merge_from_list([key, repr(value)])
        return cfg

    imgs = os.path.join(own_set, "imgs")
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        register_dataset_files(cfg_with("DATASETS.COCO", (("bad1", str(tmp_path / "missing.json"),
                                                           imgs),)))
    with pytest.raises(FileNotFoundError, match="image folder .*nope does not exist"):
        register_dataset_files(cfg_with("DATASETS.COCO", (("bad2", os.path.join(
            own_set, "val.json"), str(tmp_path / "nope")),)))
    with pytest.raises(ValueError, match="DATASETS.COCO: each entry is"):
        register_dataset_files(cfg_with("DATASETS.COCO", (("bad3", "only_two.json"),)))
    with pytest.raises(ValueError, match="'shapes_val' is already registered as something else"):
        register_dataset_files(cfg_with("DATASETS.COCO", (("shapes_val", os.path.join(
            own_set, "val.json"), imgs),)))
    # the same entry twice (every worker, every build function) is fine
    cfg = cfg_with("DATASETS.COCO", (("twice_val", os.path.join(own_set, "val.json"), imgs),))
    assert register_dataset_files(cfg) == register_dataset_files(cfg) == ["twice_val"]


def test_a_pascal_voc_folder_with_its_own_classes(own_set, tmp_path):
    """--dataset-voc NAME DIR SPLIT 'a,b': Detectron2's register_pascal_voc; the names are
    given in the option, in that order."""
    from detectron2.data import DatasetCatalog

    voc = tmp_path / "voc"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (voc / sub).mkdir(parents=True)
    ids = []
    for d in json.load(open(os.path.join(own_set, "val.json")))["images"]:
        stem = f"im{d['id']}"
        ids.append(stem)
        Image.open(os.path.join(own_set, "imgs", d["file_name"])).convert("RGB").save(
            voc / "JPEGImages" / f"{stem}.jpg")
        root = ET.Element("annotation")
        size = ET.SubElement(root, "size")
        ET.SubElement(size, "width").text = str(d["width"])
        ET.SubElement(size, "height").text = str(d["height"])
        for cls, box in (("square", (3, 3, 20, 20)), ("disc", (30, 30, 50, 50))):
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = cls
            ET.SubElement(obj, "difficult").text = "0"
            bb = ET.SubElement(obj, "bndbox")
            for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ET.SubElement(bb, k).text = str(v)
        ET.ElementTree(root).write(voc / "Annotations" / f"{stem}.xml")
    (voc / "ImageSets" / "Main" / "val.txt").write_text("\n".join(ids) + "\n")

    vis = load_tool("visualize_data")
    res = vis.main([
        "--config-file", CONFIG, "--source", "annotation", "--output", str(tmp_path / "vis"),
        "--dataset-voc", "myvoc_val", str(voc), "val", "square,disc", "--dataset", "myvoc_val",
        "INPUT.FIXED_SIZE", "(64, 64)"])
    assert len(res["written"]) == 2
    dicts = DatasetCatalog.get("myvoc_val")
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [0, 1]
    from ssd_r34.data import dataset_metadata

    assert dataset_metadata("myvoc_val").thing_classes == ["square", "disc"]


# ---- one override syntax ------------------------------------------------------------------
TOOLS = {  # tool -> (its options before the overrides, how to get its arguments)
    "demo": ["--config-file", CONFIG, "--output", "o", "--input", "a.jpg", "b.png"],
    "visualize_data": ["--config-file", CONFIG, "--source", "annotation", "--output", "o"],
    "export_model": ["--config-file", CONFIG, "--format", "onnx", "--output", "o"],
    "analyze_model": ["--config-file", CONFIG, "--tasks", "parameter", "flop"],
    "train_net": ["--config-file", CONFIG, "--num-gpus", "2"],
    "train_regime": ["--config-file", CONFIG, "--num-gpus", "1", "2"],
}


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_every_tool_takes_bare_overrides_and_opts_alike(tool):
    mod = load_tool(tool)
    parse = mod.parse_args if tool == "train_regime" else \
        (lambda argv: mod.get_parser().parse_args(argv))
    overrides = ["MODEL.WEIGHTS", "w.pth", "DATASETS.TEST", "('mine_val',)", "SEED", "3"]
    bare = parse(TOOLS[tool] + overrides)
    alias = parse(TOOLS[tool] + ["--opts"] + overrides)
    assert bare.opts == alias.opts == overrides
    if tool == "demo":  # --input's paths end where the overrides begin
        assert bare.input == ["a.jpg", "b.png"]
    if tool != "analyze_model":
        args = parse(TOOLS[tool][:2] + ["--dataset-coco", "m", "m.json", "imgs/"]
                     + TOOLS[tool][2:] + overrides)
        assert args.dataset_coco == [["m", "m.json", "imgs/"]] and args.opts == overrides
    with pytest.raises(SystemExit):  # an odd number of words is not KEY VALUE pairs
        parse(TOOLS[tool] + ["MODEL.WEIGHTS"])


def test_train_regime_passes_the_data_sets_on_to_every_stage():
    mod = load_tool("train_regime")
    args = mod.parse_args(["--config-file", CONFIG, "--num-gpus", "1", "--dataset-coco", "m",
                           "m.json", "imgs/", "SEED", "3"])
    cmd = mod.command(CONFIG, 1, args.opts, args)
    i = cmd.index("--dataset-coco")
    assert cmd[i:i + 4] == ["--dataset-coco", "m", "m.json", "imgs/"] and cmd[-2:] == ["SEED", "3"]


def test_a_mistyped_key_after_input_fails_naming_it():
    from ssd_r34.cli import args as cli

    demo = load_tool("demo")
    args = demo.get_parser().parse_args(["--config-file", CONFIG, "--output", "o", "--input",
                                         "a.jpg", "MODEL.WEIGTHS", "m.pth"])
    assert args.input == ["a.jpg"]
    with pytest.raises(AssertionError, match="Non-existent key: MODEL.WEIGTHS"):  # yacs
        cli.inference_cfg(args)
