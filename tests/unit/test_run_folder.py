"""A run folder accepts a run only when nothing is lost (issue 15, items 2, 3, 6, 7): a finished
run is never overwritten by accident, a refused run writes nothing, a mistyped resume is an
error, and evaluation settings never block a resume."""

import pytest

from lt_bench.errors import ConfigError
from lt_bench.run_folder import accept_run_folder, config_hash, training_hash
from tests.helpers.runs import QUICK, run_py


def snapshot(root):
    """Every file under ``root`` with its bytes and mtime."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_accept_rules(make_cfg, tmp_path):
    root = tmp_path / "run"
    assert accept_run_folder(make_cfg(out_dir=root), root) == "new"
    assert accept_run_folder(make_cfg("resume=auto", out_dir=root), root) == "new"
    with pytest.raises(ConfigError, match="resume=true but .* holds no checkpoint"):
        accept_run_folder(make_cfg("resume=true", out_dir=root), root)
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "stage1.pt").write_bytes(b"x")
    (root / "results.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"already holds a run \(results.json, checkpoints/stage1.pt\)"):
        accept_run_folder(make_cfg(out_dir=root), root)
    assert accept_run_folder(make_cfg("resume=true", out_dir=root), root) == "resume"
    assert accept_run_folder(make_cfg("resume=auto", out_dir=root), root) == "resume"
    assert accept_run_folder(make_cfg("overwrite=true", out_dir=root), root) == "overwrite"
    with pytest.raises(ConfigError, match="resume must be true, false or auto"):
        accept_run_folder(make_cfg("resume=maybe", out_dir=root), root)
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        accept_run_folder(make_cfg(out_dir=tmp_path / "afile"), tmp_path / "afile")


def test_evaluation_settings_do_not_change_the_resume_hash(make_cfg):
    base = make_cfg()
    evaluated = make_cfg("eval.ece_bins=10", "data.eval_batch_size=64", "eval.select=none")
    assert training_hash(base) == training_hash(evaluated) and config_hash(base) != config_hash(evaluated)
    assert training_hash(base) != training_hash(make_cfg("stage1.lr=0.2"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished short digits run."""
    tmp = tmp_path_factory.mktemp("finished")
    out = tmp / "run"
    proc = run_py(*QUICK, f"out_dir={out}", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, out


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    ((), "already holds a run"),                               # item 2: no silent overwrite
    (("resume=true", "stage1.lr=0.2"), "config hash"),          # item 3: a refused resume writes nothing
])
def test_a_refused_run_leaves_the_folder_untouched(finished, overrides, message):
    tmp, out = finished
    before = snapshot(out)
    proc = run_py(*QUICK, f"out_dir={out}", *overrides, cwd=tmp)
    assert proc.returncode != 0 and message in proc.stderr
    assert snapshot(out) == before


@pytest.mark.slow
def test_resume_with_other_evaluation_settings_and_overwrite(finished, tmp_path):
    """Item 6: a finished stage may be re-evaluated with other evaluation settings; overwrite
    replaces the run."""
    import shutil
    _, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    proc = run_py(*QUICK, f"out_dir={copy}", "resume=true", "eval.ece_bins=10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_py(*QUICK, f"out_dir={copy}", "overwrite=true", "seed=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    records = json.loads((copy / "results.json").read_text())
    assert [r["seed"] for r in records] == [1, 1]               # nothing of the earlier run mixed in


def test_resume_into_an_empty_folder_is_named(tmp_path):
    proc = run_py(*QUICK, f"out_dir={tmp_path / 'typo'}", "resume=true", cwd=tmp_path)
    assert proc.returncode != 0 and "holds no checkpoint to resume" in proc.stderr
    assert not (tmp_path / "typo").exists()


def test_a_second_writer_is_refused_and_live_temp_files_survive(tmp_path):
    """Item 4: the run-folder lock names its holder; atomic_write removes only the temporary files
    of writers that are gone."""
    import os

    from lt_bench.fileio import RunLock, atomic_write
    first = RunLock(tmp_path).acquire()
    with pytest.raises(ConfigError, match=rf"in use by a running run \(pid {os.getpid()}\)"):
        RunLock(tmp_path).acquire()
    first.release()
    RunLock(tmp_path).acquire().release()
    live = tmp_path / f".results.json.{os.getpid()}.abc.tmp"          # another writer, in flight
    dead = tmp_path / ".results.json.999999999.abc.tmp"               # a writer that was killed
    old = tmp_path / ".results.json.abc.tmp"                          # no pid: an older writer's leftover
    for path in (live, dead, old):
        path.write_text("partial")
    atomic_write(tmp_path / "results.json", lambda f: f.write(b"[]"))
    assert live.exists() and not dead.exists() and not old.exists()
    assert (tmp_path / "results.json").read_text() == "[]"


@pytest.mark.parametrize("where", ["mkstemp", "fsync", "replace"])
def test_a_full_disk_is_a_storage_error_naming_the_file(tmp_path, monkeypatch, where):
    """ENOSPC wherever it strikes in atomic_write: StorageError naming the target and the reason,
    the previous file intact, no temporary file left."""
    import errno
    import os
    import tempfile

    from lt_bench.errors import StorageError
    from lt_bench.fileio import atomic_write
    target = tmp_path / "results.json"
    target.write_text("old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(tempfile if where == "mkstemp" else os, where, full)
    with pytest.raises(StorageError) as err:
        atomic_write(target, lambda f: f.write(b"new"))
    assert str(err.value) == (f"cannot write {target}: No space left on device "
                              "(free some space, then resume=true)")
    assert err.value.exit_status == 74 and isinstance(err.value.__cause__, OSError)
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
