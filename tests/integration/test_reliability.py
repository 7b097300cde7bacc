"""Faults lose nothing and explain themselves: kills, SIGTERM, dying ranks, a failing stage
(the bad-input cases that need no whole run are in tests/unit/test_hostile_inputs.py)."""
import shutil

import pytest
import torch

from lt_bench.checkpoint import load_checkpoint
from lt_bench.errors import NonFiniteLossError
from lt_bench.pipeline import run_training
from lt_bench.records import read_records
from tests.helpers.runs import QUICK, TORCHRUN, comparable, results, run_py

slow = pytest.mark.slow


# -- 1. interrupted runs ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    assert run_py(f"out_dir={out}", *QUICK, cwd=out).returncode == 0
    return out


def final_weights_equal(a, b) -> bool:
    wa, wb = (load_checkpoint(d / "checkpoints" / "stage2.pt")["model"] for d in (a, b))
    return all(torch.equal(wa[k], wb[k]) for k in wb)


@slow
@pytest.mark.parametrize("failpoint,stage,done", [
    ("stage1.step:3:4", "stage1", 2),           # SIGKILL mid-epoch: epoch 3 is redone
    ("stage2.step:2:3", "stage2", 1),           # SIGKILL mid-epoch in stage 2
    ("checkpoint.write:stage1:3", "stage1", 2), # SIGKILL half-way through writing a checkpoint
])
def test_sigkill_then_resume_equals_the_uninterrupted_run(uninterrupted, tmp_path, failpoint, stage, done):
    killed = run_py(f"out_dir={tmp_path}", *QUICK, cwd=tmp_path, failpoint=failpoint)
    assert killed.returncode == -9, killed.stderr[-2000:]
    # the checkpoint on disk is whole and is the last completed epoch's
    assert load_checkpoint(tmp_path / "checkpoints" / f"{stage}.pt")["progress"]["epochs_done"] == done
    resumed = run_py(f"out_dir={tmp_path}", "resume=true", *QUICK, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert comparable(results(tmp_path)) == comparable(results(uninterrupted))
    assert final_weights_equal(tmp_path, uninterrupted)
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))     # the half-written file is gone


@slow
@pytest.mark.parametrize("failpoint,stage,epoch,step,signal,status", [
    ("stage1.step:2:5!term", "stage1", 2, 5, "SIGTERM", 143),
    ("stage2.step:1:3!term", "stage2", 1, 3, "SIGTERM", 143),
    ("stage1.step:2:4!int", "stage1", 2, 4, "SIGINT", 130),     # Ctrl-C: saved like SIGTERM
    ("stage1.step:1:6!usr1", "stage1", 1, 6, "SIGUSR1", 138),   # SLURM's warning before the time limit
])
def test_sigterm_saves_mid_epoch_and_resume_is_exact(uninterrupted, tmp_path, failpoint, stage, epoch, step,
                                                     signal, status):
    stopped = run_py(f"out_dir={tmp_path}", *QUICK, cwd=tmp_path, failpoint=failpoint)
    assert stopped.returncode == status, stopped.stderr[-2000:]
    output = stopped.stdout + stopped.stderr
    assert f"{signal}, checkpoint saved at epoch" in output and "resume=true" in output
    assert "Traceback" not in output
    progress = load_checkpoint(tmp_path / "checkpoints" / f"{stage}.pt")["progress"]
    assert progress["in_epoch"]["epoch"] == epoch - 1 and progress["in_epoch"]["steps"] == step
    resumed = run_py(f"out_dir={tmp_path}", "resume=true", *QUICK, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert comparable(results(tmp_path)) == comparable(results(uninterrupted))
    assert final_weights_equal(tmp_path, uninterrupted)


@slow
def test_a_full_disk_is_named_in_the_log_and_the_run_resumes(uninterrupted, tmp_path):
    """ENOSPC while writing stage 1's epoch-2 checkpoint: exit 74, the file and the reason named
    on stderr and in run.log, no traceback, no temporary file left; the epoch-1 checkpoint is
    whole, and resume=true (space freed) ends equal to the uninterrupted run."""
    failed = run_py(f"out_dir={tmp_path}", *QUICK, cwd=tmp_path, failpoint="checkpoint.write:stage1:2!enospc")
    output = failed.stdout + failed.stderr
    expected = f"StorageError: cannot write {tmp_path / 'checkpoints' / 'stage1.pt'}: No space left on device"
    assert failed.returncode == 74 and expected in output and "Traceback" not in output, output[-2000:]
    assert expected in (tmp_path / "run.log").read_text()
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    assert load_checkpoint(tmp_path / "checkpoints" / "stage1.pt")["progress"]["epochs_done"] == 1
    resumed = run_py(f"out_dir={tmp_path}", "resume=true", *QUICK, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert comparable(results(tmp_path)) == comparable(results(uninterrupted))


@slow
def test_resume_refuses_a_different_config(uninterrupted, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted, run)
    before = (run / "results.json").read_text()
    proc = run_py(f"out_dir={run}", "resume=true", "stage1.lr=0.5", *QUICK, cwd=tmp_path)
    assert proc.returncode == 2 and "config hash" in proc.stdout + proc.stderr
    assert (run / "results.json").read_text() == before              # nothing overwritten


# -- 2. DDP faults --------------------------------------------------------------------------

@slow
def test_one_rank_raising_fails_the_whole_job_fast(tmp_path):
    """Rank 1 raises after epoch 1; rank 0 must be torn down by torchrun, not left waiting in a
    collective.  distributed.timeout_minutes=30 makes a hang outlive run_py's 180 s watchdog
    (subprocess.TimeoutExpired fails the test), and rank 0 must not have gone on to finish."""
    proc = run_py(f"out_dir={tmp_path}", *QUICK, "distributed.timeout_minutes=30", cwd=tmp_path,
                  launcher=TORCHRUN, failpoint="stage1.epoch_end:1@1!raise", timeout=180)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "failpoint stage1.epoch_end:1 (rank 1)" in output
    assert "timed out" not in output.lower()              # ended by the error, not a collective timeout
    assert not (tmp_path / "results.json").exists()       # no rank carried on to write a record


@slow
def test_resumed_ddp_run_equals_the_uninterrupted_one(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_py(f"out_dir={whole}", *QUICK, cwd=tmp_path, launcher=TORCHRUN).returncode == 0
    killed = run_py(f"out_dir={cut}", *QUICK, cwd=tmp_path, launcher=TORCHRUN, failpoint="stage1.epoch_end:2")
    assert killed.returncode != 0
    resumed = run_py(f"out_dir={cut}", "resume=true", *QUICK, cwd=tmp_path, launcher=TORCHRUN)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert comparable(results(cut)) == comparable(results(whole))


# -- 4. bad configuration: fails at start, before any data is read ---------------------------

# Through run.py, to see what the user sees (the in-process checks of every other name are in
# tests/unit/test_validate.py, tests/unit/data/test_split_file.py, tests/unit/models/test_pretrained.py,
# test_pipeline.py).
@slow
@pytest.mark.parametrize("override,message", [
    ("task=cifar100t", "Could not find 'task/cifar100t'"),                      # Hydra: lists the options
    ("stage2.actvation=gumbel", "unknown key stage2.actvation: stage2 has activation, "),  # with the valid keys
    ("stage2.activation=gumble", "unknown stage2.activation 'gumble'; valid: gumbel, sigmoid, softmax"),
])
def test_bad_configuration_fails_at_start_naming_the_value(tmp_path, override, message):
    proc = run_py(override, f"data.root={tmp_path / 'no_data'}", f"out_dir={tmp_path / 'run'}",
                  cwd=tmp_path, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in output, output[-2000:]
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "results.json").exists()


# -- 6. records are never lost ----------------------------------------------------------------

def test_stage1_record_survives_a_failing_stage2(make_cfg, tmp_path):
    cfg = make_cfg("stage1.epochs=1", "stage2.epochs=1", "stage2.lr=1e30", "stage2.loss_scale=1e30",
                   "plots=false", out_dir=tmp_path)
    with pytest.raises(NonFiniteLossError, match="stage2: loss is"):
        run_training(cfg)
    assert [(r["stage"], r["method"]) for r in read_records(tmp_path / "results.json")] == [(1, "softmax")]
