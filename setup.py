"""Build steps pyproject.toml cannot declare: the configs copied into the package, and the
C++ Winograd transforms built as ``ssd_r34.layers._winograd_C`` where torch and a compiler
are there (otherwise, or where the build fails, ssd_r34/layers/winograd.py builds them on
first use, as from a source checkout). Metadata and dependencies: pyproject.toml.

SSD_R34_BUILD_EXT=0 skips the C++ build; SSD_R34_PORTABLE=1 builds it without -march=native
(for a wheel run on other CPUs)."""
import glob
import hashlib
import os
import platform
import shutil
import warnings

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
WINOGRAD = os.path.join("ssd_r34", "layers", "csrc", "winograd.cpp")


class BuildPyWithConfigs(build_py):
    """Copies configs/*.yaml and configs/*.py into ssd_r34/configs/ of the build: the
    repository keeps one copy (configs/), the installed package gets it too
    (ssd_r34.model_zoo)."""

    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads configs/ itself
            return
        target = os.path.join(self.build_lib, "ssd_r34", "configs")
        os.makedirs(target, exist_ok=True)
        for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")) +
                           glob.glob(os.path.join(ROOT, "configs", "*.py"))):
            shutil.copy2(path, target)


def _extensions():
    if os.environ.get("SSD_R34_BUILD_EXT", "1") == "0":
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # isolated build without torch: built on first use instead
        return [], {}

    class OptionalBuildExtension(BuildExtension):
        """A failed C++ build (no compiler, no headers) leaves the install working: the
        transforms are then built on first use, or the direct convolution runs."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as e:  # noqa: BLE001
                warnings.warn(f"ssd_r34: the C++ Winograd transforms were not built ({e}); "
                              "they are built on first use where a compiler is available.")

    with open(os.path.join(ROOT, WINOGRAD), "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()[:16]
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64") and os.environ.get("SSD_R34_PORTABLE") != "1":
        flags.append("-march=native")
    ext = CppExtension("ssd_r34.layers._winograd_C", [WINOGRAD], extra_compile_args=flags,
                       extra_link_args=["-fopenmp"],
                       define_macros=[("SSD_R34_WINOGRAD_SHA", f'"{sha}"')])
    return [ext], {"build_ext": OptionalBuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPyWithConfigs, **cmdclass})
