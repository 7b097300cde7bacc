"""The detection analyses on real (toy) runs: the small Mask R-CNN (``detector=toy_mask_rcnn``)
trained on the generated long-tailed toy set with a sigmoid and a Gumbel box classifier through
run.py's own path (``run_detection`` with ``detection.grad_stats=true``), then

- ``docs/det_ap_vs_frequency.png``: per-category mask AP (training-set AP, FastLVISMetric) against
  training images (``lt-bench det-ap-vs-frequency``);
- ``docs/det_positive_gradients.png``: the mean positive gradient per category over training
  (GOL's Figure 7; ``lt-bench det-gradients``);
- ``docs/det_weight_norms_toy.png``: the box classifiers' weight norms per category from the two
  final checkpoints (GOL's Figure 1 (ii); ``lt-bench det-weight-norms``).

    python benchmarks/det_analyses.py --work /tmp/det_analyses --epochs 4     # 2 x 200 iterations, CPU

Each run folder (WORK/<variant>) keeps its results.json, grad_stats.json and checkpoint; a
variant whose results.json exists is not trained again.  The numbers behind each picture are
written beside it in WORK (the commands' --json).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {"sigmoid": ["activation=sigmoid", "detection.scoring=activation"], "gumbel": ["activation=gumbel"]}


def compose_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from lt_bench.compose import setup_hydra
    setup_hydra()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=overrides)


def run_variant(toy, out: Path, overrides: list[str], epochs: int, seed: int) -> float:
    from lt_bench.detection.runner import run_detection
    from lt_bench.detection.toy import run_overrides
    if (out / "results.json").exists():
        print(f"done already: {out}", flush=True)
        return 0.0
    started = time.perf_counter()
    run_detection(compose_cfg([*run_overrides(toy, out, seed), *overrides, f"detection.max_epochs={epochs}",
                               "detection.grad_stats=true"]))
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="/tmp/det_analyses", help="toy set and run folders")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of 50 iterations (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--docs", default=str(ROOT / "docs"), help="where the three pictures go (replaced)")
    args = parser.parse_args(argv)
    from lt_bench.detection.analysis import ap_vs_frequency, positive_gradients, weight_norms
    from lt_bench.detection.toy import make_toy_lvis
    work, docs = Path(args.work), Path(args.docs)
    toy = make_toy_lvis(work / "toy")
    for name, overrides in VARIANTS.items():
        seconds = run_variant(toy, work / name, overrides, args.epochs, args.seed)
        print(f"{name}: trained and evaluated in {seconds / 60:.1f} min", flush=True)
    runs, labels = [str(work / name) for name in VARIANTS], list(VARIANTS)
    checkpoints = [str(sorted((work / name).glob("epoch_*.pth"))[-1]) for name in VARIANTS]
    steps = [
        (ap_vs_frequency.main, [*runs, "--labels", *labels, "--out", str(docs / "det_ap_vs_frequency.png"),
                                "--json", str(work / "ap_vs_frequency.json")]),
        (positive_gradients.main, [*(f"{r}/grad_stats.json" for r in runs), "--ann", str(toy.ann_file),
                                   "--labels", *labels, "--out", str(docs / "det_positive_gradients.png"),
                                   "--json", str(work / "positive_gradients.json")]),
        (weight_norms.main, [*checkpoints, "--ann", str(toy.ann_file), "--labels", *labels,
                             "--out", str(docs / "det_weight_norms_toy.png"), "--json", str(work / "weight_norms.json")]),
    ]
    for command, arguments in steps:
        if command(arguments + ["--overwrite"]) != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
