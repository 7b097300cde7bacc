"""How much the digits-LT demo's numbers move between machines: the demo (``python run.py
task=digits_lt``) over seeds and CPU thread counts, written to benchmarks/results/demo_spread.md.

    python benchmarks/demo_spread.py                       # seeds 0-4, 1 and 2 threads
    python benchmarks/demo_spread.py --seeds 0 1 --threads 2

The same seed gives the same numbers on one machine, run after run, but not across machines:
the order in which a float reduction adds up (a convolution's sum over channels, a matrix
product) depends on the number of threads and on the CPU's vector instructions, results differ
in the last bits, and 300 training steps amplify that into different weights.  A thread count
stands in for "another machine" here; the seeds show the spread one should expect anyway.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "results" / "demo_spread.md"


def demo(seed: int, threads: int, folder: Path) -> dict[str, float]:
    """stage -> top-1 of one demo run."""
    out = folder / f"seed{seed}_threads{threads}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run([sys.executable, str(REPO / "run.py"), "task=digits_lt", f"seed={seed}", f"out_dir={out}",
                    "progress=false", "plots=false"], cwd=REPO, env=env, check=True, capture_output=True)
    return {f"stage {r['stage']} {r['method']}": r["top1"] for r in json.loads((out / "results.json").read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    rows, columns = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for threads in args.threads:
                top1 = demo(seed, threads, Path(tmp))
                rows.append((seed, threads, top1))
                for key, value in top1.items():
                    columns.setdefault(key, []).append(value)
                print(seed, threads, top1, flush=True)
    keys = list(columns)
    lines = ["| seed | threads | " + " | ".join(keys) + " |", "| ---: | ---: |" + " ---: |" * len(keys)]
    lines += [f"| {s} | {t} | " + " | ".join(f"{v[k]:.2f}" for k in keys) + " |" for s, t, v in rows]
    lines.append("| all | | " + " | ".join(f"{statistics.mean(columns[k]):.2f} ± {statistics.stdev(columns[k]):.2f}"
                                         for k in keys) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
