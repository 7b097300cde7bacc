"""Learning check of the detection track: each box-classifier loss trains a small Mask R-CNN on
the generated toy set (lt_bench/detection/toy.py) through run.py's own path (task=lvis), and the
training-set mask AP, its frequency groups and box AP are tabulated for BENCHMARKS.md.

    python benchmarks/detection_learning.py                       # every loss, ~25 min on 2 CPU cores
    python benchmarks/detection_learning.py --variants gumbel,drop+gumbel --ablation
    python benchmarks/detection_learning.py --variants "retinanet focal+sigmoid,retinanet focal+gumbel"

``--ablation`` adds the box-head init of lt_bench before this fix (issue 12): the classifier
initialiser also hit fc6/fc7 (constant weights 0.001, bias -2), so those 256 units stay
identical and their ReLUs start dead; the same toy set and iterations show what it did.
Records go to WORK/<variant>/results.json; the table is printed and written to WORK/table.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {   # name -> run.py overrides
    "softmax": ["activation=softmax"],
    "sigmoid": ["activation=sigmoid", "detection.scoring=activation"],
    "sigmoid (softmax scores)": ["activation=sigmoid", "detection.scoring=softmax"],
    "gumbel": ["activation=gumbel"],
    "eql+gumbel": ["activation=gumbel", "detector.loss=eql"],
    "drop+gumbel": ["activation=gumbel", "detector.loss=drop"],
    "acsl+gumbel": ["activation=gumbel", "detector.loss=acsl"],
    "federated+gumbel": ["activation=gumbel", "detector.loss=federated"],
    # the dense detector (a small RetinaNet; AP is box AP): mmdet's sigmoid focal loss, the same
    # focal modulation over Gumbel, and Gumbel started from the sigmoid's prior bias (-4.6, below
    # Gumbel's loss clamp at -4: no positive gradient until something pushes the logits up)
    "retinanet focal+sigmoid": ["activation=sigmoid"],
    "retinanet focal+gumbel": ["activation=gumbel"],
    "retinanet focal+gumbel, sigmoid's prior bias": ["activation=gumbel", "detector.classifier_init=keep"],
}
DETECTOR = {name: "toy_retinanet" if name.startswith("retinanet") else "toy_mask_rcnn" for name in VARIANTS}
ABLATION = "gumbel with the old init bug (fc6/fc7 constant)"


def compose_cfg(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from lt_bench.compose import setup_hydra
    setup_hydra()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=overrides)


def with_broken_init(apply_box_classifier):
    """The box head as lt_bench initialised it before the fix: a constant init on every Linear
    of the head (fc6, fc7, fc_cls, fc_reg), then Normal(0.001) on fc_reg."""
    def apply(mm, cfg, stats, frequency_file):
        apply_box_classifier(mm, cfg, stats, frequency_file)
        mm.model["roi_head"]["bbox_head"]["init_cfg"] = [
            dict(type="Constant", val=0.001, bias=-2.0, layer="Linear"),
            dict(type="Normal", std=0.001, override=dict(name="fc_reg"))]
        return mm
    return apply


def run_variant(name: str, overrides: list[str], ablation: bool = False) -> dict:
    from unittest import mock

    from lt_bench.detection import runner
    cfg = compose_cfg(overrides)
    started = time.perf_counter()
    if ablation:
        with mock.patch.object(runner, "apply_box_classifier", with_broken_init(runner.apply_box_classifier)):
            record = runner.run_detection(cfg)
    else:
        record = runner.run_detection(cfg)
    return {"variant": name, "seconds": time.perf_counter() - started, **record}


def table(rows: list[dict]) -> str:
    keys = ("AP", "AP50", "APr", "APc", "APf", "APbox")
    lines = ["| box classifier | " + " | ".join(keys) + " | iterations | minutes |",
             "| --- | " + " | ".join("---:" for _ in keys) + " | ---: | ---: |"]
    for r in rows:
        values = [r["bbox"]["AP"] if k == "APbox" else r[k] for k in keys]
        lines.append(f"| {r['variant']} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in values)
                     + f" | {r['iterations']} | {r['seconds'] / 60:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/detection_learning", help="toy set and run folders")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--ablation", action="store_true", help=f"also run '{ABLATION}'")
    parser.add_argument("--epochs", type=int, default=None, help="default: the toy config's (8 x 50 iterations)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from lt_bench.detection.toy import make_toy_lvis, run_overrides
    work = Path(args.work)
    toy = make_toy_lvis(work / "toy", seed=0)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    rows = []
    plan = [(n, VARIANTS[n], False) for n in names] + ([(ABLATION, VARIANTS["gumbel"], True)] if args.ablation else [])
    for name, extra, ablation in plan:
        folder = work / name.replace(" ", "_").replace(",", "").replace("'", "").replace("+", "_").replace("(", "").replace(")", "").replace("/", "_")
        epochs = [f"detection.max_epochs={args.epochs}"] if args.epochs else []
        overrides = run_overrides(toy, folder, args.seed, DETECTOR.get(name, "toy_mask_rcnn")) + epochs + extra
        rows.append(record := run_variant(name, overrides, ablation))
        print(f"{name}: AP {record['AP']:.1f}  ({record['seconds'] / 60:.1f} min)", flush=True)
    text = table(rows)
    (work / "table.md").write_text(text + "\n")
    (work / "table.json").write_text(json.dumps(rows, indent=1, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
