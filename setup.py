from setuptools import find_packages, setup

setup(
    name="ssd_r34",
    version="0.1.0",
    description="MLPerf SSD-ResNet34 (1200x1200, configurable strides) as a Detectron2 extension",
    packages=find_packages(include=["ssd_r34", "ssd_r34.*"]),
    # Compiled on first use by torch.utils.cpp_extension (ssd_r34/layers/winograd.py).
    package_data={"ssd_r34": ["layers/csrc/*.cpp"]},
    python_requires=">=3.9",
    # torch, torchvision and detectron2 are installed by the Makefile (see README):
    # detectron2 is not on PyPI under its own name.
    install_requires=["numpy", "pycocotools", "fvcore", "Pillow"],
)
