"""The flat module names of ssd_r34 0.1 (``ssd_r34.predictor``, ``ssd_r34.meta_arch`` ...)
keep working for one release: importing one gives the module's new home with a
DeprecationWarning naming it."""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old module -> new module
MOVED = {
    "ssd_r34.anchor_generator": "ssd_r34.modeling.anchor_generator",
    "ssd_r34.backbone": "ssd_r34.modeling.backbone",
    "ssd_r34.head": "ssd_r34.modeling.head",
    "ssd_r34.meta_arch": "ssd_r34.modeling.meta_arch",
    "ssd_r34.winograd": "ssd_r34.layers.winograd",
    "ssd_r34.onednn": "ssd_r34.layers.onednn",
    "ssd_r34.sparse_grad": "ssd_r34.layers.sparse_grad",
    "ssd_r34.atomic_io": "ssd_r34.checkpoint.atomic_io",
    "ssd_r34.hooks": "ssd_r34.engine.hooks",
    "ssd_r34.train_loop": "ssd_r34.engine.train_loop",
    "ssd_r34.predictor": "ssd_r34.engine.predictor",
    "ssd_r34.resumable_loader": "ssd_r34.data.loader",
    "ssd_r34.data.shapes": "ssd_r34.data.datasets.shapes",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, new_name: str):
        self.new_name = new_name

    def create_module(self, spec):
        return None  # a blank module, replaced in exec_module

    def exec_module(self, module):
        # The import system returns what sys.modules holds under the name after this call:
        # the new module itself, so its classes and functions are the same objects.
        warnings.warn(f"{module.__name__} moved to {self.new_name}; the old name will be "
                      "removed in the next release.", DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(self.new_name)


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, _AliasLoader(MOVED[fullname]))
        return None


def install_module_aliases() -> None:
    """Put the finder of the old names on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
