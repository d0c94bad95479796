"""The package's architecture, checked from its source: imports point one way only
(layers <- modeling <- checkpoint / export <- engine), no import circle, tools do not import
each other, the package never imports tools/, benchmarks/ or tests/; Detectron2 code that
ssd_r34 mirrors is watched; ``import ssd_r34`` is silent and registers what README says."""
import ast
import inspect
import os
import subprocess

import pytest
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE = os.path.join(ROOT, "ssd_r34")

# room -> rooms it may import (besides itself). "" is the package's __init__.py.
ALLOWED = {
    "layers": set(),
    "config": set(),
    "modeling": {"layers", "config"},
    "data": {"layers", "config"},
    "checkpoint": {"layers", "config", "modeling"},
    "export": {"layers", "config", "modeling", "data"},
    "engine": {"layers", "config", "modeling", "data", "checkpoint", "export"},
    # small top rooms: the model zoo, and the command lines (console scripts) on top of it
    "model_zoo": {"layers", "config", "modeling", "data", "checkpoint", "export", "engine"},
    "cli": {"layers", "config", "modeling", "data", "checkpoint", "export", "engine",
            "model_zoo"},
    "": {"layers", "config", "modeling", "data", "checkpoint", "export", "engine",
         "model_zoo", "cli"},
}
FOREIGN = {"tools", "benchmarks", "tests", "reference_impl", "baseline", "_common", "conftest"}


def _module_name(path, root=ROOT):
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _package_files(package=PACKAGE):
    for folder, _, files in os.walk(package):
        for f in sorted(files):
            if f.endswith(".py"):
                yield os.path.join(folder, f)


def _imports(path, root=ROOT):
    """Absolute names of the modules ``path`` imports (at any depth of its code)."""
    name = _module_name(path, root)
    is_pkg = path.endswith("__init__.py")
    package = name if is_pkg else name.rpartition(".")[0]
    tree = ast.parse(open(path).read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            # "from . import data" imports a submodule
            for a in node.names:
                candidate = os.path.join(root, *f"{mod}.{a.name}".split("."))
                if os.path.isdir(candidate) or os.path.exists(candidate + ".py"):
                    out.add(f"{mod}.{a.name}")
    return out


def _room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_violations(root=ROOT):
    """Imports of ``root``/ssd_r34 that run against ALLOWED or leave the package."""
    wrong = []
    for path in _package_files(os.path.join(root, "ssd_r34")):
        src = _module_name(path, root)
        for target in _imports(path, root):
            top = target.split(".")[0]
            if top in FOREIGN:
                wrong.append(f"{src} imports {target} (outside the package)")
            if top != "ssd_r34":
                continue
            a, b = _room(src), _room(target)
            if target == "ssd_r34":
                if src != "ssd_r34":
                    wrong.append(f"{src} imports the top-level package")
            elif b != a and b not in ALLOWED.get(a, set()):
                wrong.append(f"{src} ({a or 'ssd_r34'}/) imports {target} ({b}/)")
    return wrong


def import_circles(root=ROOT):
    """Circles in the module graph of ``root``/ssd_r34 (a module importing its own package,
    which Python imports first anyway, is not one)."""
    graph = {_module_name(p, root): {m for m in _imports(p, root) if m.split(".")[0] == "ssd_r34"}
             for p in _package_files(os.path.join(root, "ssd_r34"))}
    state, stack, circles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph or node.startswith(nxt + ".") or nxt == node:
                continue
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return circles


def test_imports_point_one_way():
    wrong = import_violations()
    assert not wrong, "imports against the architecture:\n" + "\n".join(wrong)


def test_no_import_circle():
    circles = import_circles()
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_the_checks_catch_a_wrong_arrow_and_a_circle(tmp_path):
    """The checkers themselves, on a small package of their own: layers/ importing modeling/
    is reported, and so is a circle between two modeling modules."""
    pkg = tmp_path / "ssd_r34"
    for room in ("layers", "modeling"):
        (pkg / room).mkdir(parents=True)
        (pkg / room / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from . import modeling\n")
    (pkg / "layers" / "ops.py").write_text("from ..modeling import head\n")
    (pkg / "modeling" / "head.py").write_text("from .meta_arch import SSD\n")
    (pkg / "modeling" / "meta_arch.py").write_text("from . import head\nimport tools\n")
    wrong = import_violations(str(tmp_path))
    assert any("ssd_r34.layers.ops (layers/) imports ssd_r34.modeling" in w for w in wrong), wrong
    assert any("imports tools (outside the package)" in w for w in wrong), wrong
    circles = import_circles(str(tmp_path))
    assert [c for c in circles if "ssd_r34.modeling.head" in c and "ssd_r34.modeling.meta_arch" in c]


def test_tools_do_not_import_each_other_and_benchmarks_do_not_import_tests():
    tools = {f[:-3] for f in os.listdir(os.path.join(ROOT, "tools")) if f.endswith(".py")}
    wrong = []
    for f in sorted(os.listdir(os.path.join(ROOT, "tools"))):
        if f.endswith(".py"):
            for m in _imports(os.path.join(ROOT, "tools", f)):
                if m.split(".")[0] in tools | {"tools", "benchmarks", "tests"}:
                    wrong.append(f"tools/{f} imports {m}")
    tests = {f[:-3] for _, _, files in os.walk(os.path.join(ROOT, "tests")) for f in files
             if f.endswith(".py")}
    for f in sorted(os.listdir(os.path.join(ROOT, "benchmarks"))):
        if f.endswith(".py"):
            for m in _imports(os.path.join(ROOT, "benchmarks", f)):
                if m.split(".")[0] in tests | tools | {"tools", "tests"}:
                    wrong.append(f"benchmarks/{f} imports {m}")
    assert not wrong, "\n".join(wrong)


def test_default_trainer_init_is_upstream():
    """SSDTrainer runs DefaultTrainer.__init__ with four of its module-level names replaced
    for the call (ssd_r34/engine/defaults.py): fail when upstream stops using them there."""
    from detectron2.engine import DefaultTrainer

    from ssd_r34.engine import SSDTrainer

    assert str(inspect.signature(DefaultTrainer.__init__)) == "(self, cfg)"
    src = inspect.getsource(DefaultTrainer.__init__)
    for name in ("create_ddp_model(model", "AMPTrainer if cfg.SOLVER.AMP.ENABLED else "
                 "SimpleTrainer", "DetectionCheckpointer(", "self.build_hooks()"):
        assert name in src, name
    ours = inspect.getsource(SSDTrainer.__init__)
    assert "super().__init__(cfg)" in ours and "TrainerBase" not in ours
    # The training loop is Detectron2's own: SSDTrainer overrides no loop.
    assert "train" not in SSDTrainer.__dict__


def test_import_is_silent_and_registers_the_builtin_data_sets():
    code = ("import ssd_r34\n"
            "from detectron2.data import DatasetCatalog\n"
            "from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY\n"
            "from detectron2.modeling.anchor_generator import ANCHOR_GENERATOR_REGISTRY\n"
            "names = DatasetCatalog.list()\n"
            "assert 'shapes_train' in names and 'shapes_val' in names, names\n"
            "assert 'SSD' in META_ARCH_REGISTRY\n"
            "assert 'build_ssd_resnet34_backbone' in BACKBONE_REGISTRY\n"
            "assert 'SSDAnchorGenerator' in ANCHOR_GENERATOR_REGISTRY\n"
            "assert 'SSDHead' in ssd_r34.SSD_HEAD_REGISTRY\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    r = subprocess.run([sys.executable, "-c", "import ssd_r34"], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", (r.stdout, r.stderr)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def test_old_flat_module_names_are_gone():
    import importlib

    import ssd_r34  # noqa: F401

    for old in ("ssd_r34.predictor", "ssd_r34.meta_arch", "ssd_r34._deprecated"):
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(old)


def test_readme_is_short_and_its_links_exist():
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert len(readme.splitlines()) <= 250
    import re

    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if "://" not in link:
            assert os.path.exists(os.path.join(ROOT, link)), f"README links to missing {link}"
    for doc in os.listdir(os.path.join(ROOT, "docs")):
        if doc.endswith(".md"):
            text = open(os.path.join(ROOT, "docs", doc)).read().lower()
            assert "issue #" not in text and "spec section" not in text, doc
