"""A non-editable ``pip install .`` into a fresh virtual environment: the configs come with
the package (model zoo), the console scripts run from another folder, py.typed is there, and
the C++ Winograd transforms are the ones the package build made."""
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch

from conftest import ROOT

SKIP = shutil.ignore_patterns(".git", ".venv", "output", "__pycache__", "*.egg-info", "build",
                              "*.so", ".pytest_cache", "datasets_cache")


def run(cmd, cwd, env):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_the_package_build_ships_the_configs_and_every_console_script_exists(tmp_path):
    """The fast half of the install test below: setup.py's build_py (without the C++ build)
    copies configs/ into the package with py.typed and the C++ source, and every console
    script of pyproject.toml names a function of the package."""
    import importlib
    import tomllib

    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src)
    for name in ("ssd_r34", "configs"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=SKIP)
    env = dict(os.environ, SSD_R34_BUILD_EXT="0", PYTHONWARNINGS="ignore")
    run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", tmp_path / "lib"], src, env)
    package = tmp_path / "lib" / "ssd_r34"
    configs = sorted(f for f in os.listdir(os.path.join(ROOT, "configs"))
                     if f.endswith((".yaml", ".py")))
    assert "ssd_r34_1200.yaml" in configs and "ssd_r34_shapes.py" in configs
    assert sorted(os.listdir(package / "configs")) == configs
    for name in configs:
        with open(package / "configs" / name) as a, open(os.path.join(ROOT, "configs", name)) as b:
            assert a.read() == b.read(), name
    assert (package / "py.typed").exists()
    assert (package / "layers" / "csrc" / "winograd.cpp").exists()
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert {"ssd-r34-train", "ssd-r34-convert-mlperf"} <= set(scripts)
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name


@pytest.mark.slow  # the build without a venv and the console scripts: the test above
def test_non_editable_install_ships_configs_scripts_and_the_cpp_build(tmp_path):
    import reference_impl as ref

    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv],
        tmp_path, None)  # pip and setuptools: the set-up's (below)
    py = venv / "bin" / "python"
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               tmp_path, None).strip()
    # torch, Detectron2, setuptools ... from the set-up's environment, right after this
    # environment's own site-packages (before the base interpreter's), without the set-up's
    # .pth files (they would put the editable ssd_r34 of the checkout on the path).
    shared = sysconfig.get_paths()["purelib"]
    with open(os.path.join(site, "_setup_env.pth"), "w") as f:
        f.write(f"import sys; sys.path.insert(sys.path.index({site!r}) + 1 if {site!r} in "
                f"sys.path else len(sys.path), {shared!r})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONWARNINGS")}
    run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", src], tmp_path, env)
    shutil.rmtree(src)  # nothing may still read the sources
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import os, ssd_r34\n"
            "from ssd_r34 import model_zoo\n"
            "print(ssd_r34.__file__)\n"
            "print(model_zoo.get_config_file('ssd_r34_1200.yaml'))\n"
            "cfg = model_zoo.get_config('ssd_r34_shapes.py')\n"
            "print(cfg.model.input_size)\n"
            "print(os.path.exists(os.path.join(os.path.dirname(ssd_r34.__file__), 'py.typed')))\n"
            "from ssd_r34.layers import winograd\n"
            "ext = winograd._extension()\n"
            "print(getattr(ext, '__name__', None))\n")
    out = run([py, "-c", code], elsewhere, env).splitlines()
    assert out[0].startswith(site)
    assert out[1] == os.path.join(site, "ssd_r34", "configs", "ssd_r34_1200.yaml")
    with open(out[1]) as a, open(os.path.join(ROOT, "configs", "ssd_r34_1200.yaml")) as b:
        assert a.read() == b.read()
    assert out[2] == "[160, 160]"
    assert out[3] == "True"
    assert out[4] == "ssd_r34.layers._winograd_C"  # the package build's, not a JIT build
    # console scripts, from another folder
    assert "--config-file" in run([venv / "bin" / "ssd-r34-train", "--help"], elsewhere, env)
    torch.manual_seed(0)
    torch.save(ref.ReferenceSSDR34(81, (3, 3, 2, 2, 2, 2)).state_dict(), tmp_path / "m.pt")
    out = run([venv / "bin" / "ssd-r34-convert-mlperf", tmp_path / "m.pt", tmp_path / "m.pth"],
              elsewhere, env)
    assert "Wrote" in out and (tmp_path / "m.pth").exists()
    converted = torch.load(tmp_path / "m.pth", weights_only=True)["model"]
    assert converted["head.conf.0.weight"].shape[0] == 4 * 81
