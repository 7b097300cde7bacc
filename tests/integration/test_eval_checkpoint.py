"""lt-bench eval on a real digits run: the run's own numbers, from each stage's checkpoint."""
import json
import os
import subprocess
import sys

from lt_bench.eval_checkpoint import main as eval_main
from lt_bench.fileio import file_digest
from tests.helpers.runs import results, run_py

QUICK_EVAL = ["stage1.epochs=2", "stage2.epochs=1", "device=cpu", "progress=false", "plots=false"]
COMPARED = ("top1", "top5", "many", "medium", "few", "ece", "per_class_top1", "num_eval", "setup_hash",
            "config_hash", "method", "activation", "eval_split")


def test_eval_gives_the_runs_own_numbers_for_each_stage(tmp_path, capsys):
    out = tmp_path / "run"
    proc = run_py(f"out_dir={out}", *QUICK_EVAL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    own = {r["stage"]: r for r in results(out)}
    before = (out / "results.json").read_bytes()

    stage2 = out / "checkpoints" / "stage2.pt"
    done = subprocess.run([sys.executable, "-m", "lt_bench.cli", "eval", str(stage2)], cwd=tmp_path,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the same numbers as the run's own record (results.json)" in done.stdout
    assert f"-> {out / 'eval.json'}" in done.stdout
    assert eval_main([str(out / "checkpoints" / "stage1.pt")]) == 0
    assert eval_main([str(out), "--out", str(tmp_path / "elsewhere.json")]) == 0     # the folder: its last stage
    assert "the same numbers as the run's own record" in capsys.readouterr().out

    evals = json.loads((out / "eval.json").read_text()) + json.loads((tmp_path / "elsewhere.json").read_text())
    assert [(r["stage"], r["method"]) for r in evals] == [(2, "gumbel"), (1, "softmax"), (2, "gumbel")]
    for r in evals:
        assert {k: r[k] for k in COMPARED} == {k: own[r["stage"]][k] for k in COMPARED}, r["stage"]
        checkpoint = out / "checkpoints" / f"stage{r['stage']}.pt"
        assert r["reevaluation"] is True and r["checkpoint"] == str(checkpoint.resolve())
        assert r["checkpoint_sha256"] == file_digest(checkpoint, "sha256") and r["checkpoint_complete"] is True
        assert r["eval_overrides"] == [] and r["epochs"] == own[r["stage"]]["epochs"]
    assert (out / "results.json").read_bytes() == before                 # the run's own records untouched
