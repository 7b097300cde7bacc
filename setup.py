from setuptools import find_packages, setup

setup(
    name="lt_bench",
    version="0.1.0",
    description="Long-tailed recognition benchmarks around the Gumbel Optimized Loss (GOL, ECCV 2022)",
    packages=find_packages(include=["lt_bench", "lt_bench.*"]),
    package_data={"lt_bench": ["reference_results.json"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.3",
        "torchvision>=0.18",
        "timm>=1.0",
        "hydra-core>=1.3",
        "numpy>=1.24",
        "tensorboard>=2.14",
        "scikit-learn>=1.3",   # the bundled digits of the demo task
        "tqdm>=4.66",
        "matplotlib>=3.7",     # analysis plots
    ],
    extras_require={
        "dev": ["pytest>=8", "hypothesis>=6"],
        # detection track; mmcv (compiled ops, source-only on PyPI) comes from
        # scripts/install_detection.sh, which `make det` runs and which installs this extra
        "det": ["mmengine>=0.10,<1.0", "mmdet==3.3.0", "lvis==0.5.3", "pycocotools>=2.0.7",
                "faster-coco-eval>=1.6"],
    },
    entry_points={"console_scripts": ["lt-bench=lt_bench.cli:main"]},
)
