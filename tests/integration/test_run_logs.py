"""Whole digits runs and what they log: metrics.csv against the checkpoints' histories (also
after a SIGTERM and resume), TensorBoard's tags and HParams session, MLflow in the run folder."""
import pytest

from lt_bench.checkpoint import load_checkpoint
from lt_bench.pipeline import run_training
from lt_bench.run_logs import METRICS_FILE, read_metrics_csv
from tests.helpers.runs import run_py

pytestmark = pytest.mark.slow

TINY = ["stage1.epochs=2", "stage2.epochs=1", "device=cpu", "progress=false", "plots=false"]
TIMINGS = ("seconds", "data_seconds")


def compose(*overrides, out):
    from hydra import compose as hydra_compose, initialize_config_dir
    from tests.conftest import ROOT
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose("config", overrides=[f"out_dir={out}", *overrides])


def events(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_run")
    return out, run_training(compose(*TINY, out=out))


def test_metrics_csv_holds_each_epoch_as_the_checkpoints_do(tiny_run):
    out, records = tiny_run
    rows = read_metrics_csv(out / METRICS_FILE)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1")]
    history = [h for stage in (1, 2) for h in load_checkpoint(out / "checkpoints" / f"stage{stage}.pt")
               ["progress"]["history"]]
    assert len(history) == 3
    for row, h in zip(rows, history):
        assert (float(row["loss"]), float(row["lr"]), float(row["train_top1"])) == (h["loss"], h["lr"], h["train_top1"])
        assert float(row["seconds"]) == h["seconds"]
    # the last stage is evaluated every epoch (eval.select=auto picks its best epoch): its row has
    # the test metrics, stage 1's rows leave them empty
    assert rows[0]["test_top1"] == "" and rows[1]["test_many"] == ""
    assert float(rows[2]["test_top1"]) == history[2]["test_top1"]
    assert float(rows[2]["test_top1"]) == pytest.approx(records[1]["top1"])    # the record's last epoch
    assert float(rows[2]["test_ece"]) == pytest.approx(records[1]["ece"])


def test_tensorboard_tags_and_hparams_of_a_run(tiny_run):
    out, records = tiny_run
    stage1, stage2 = (events(out / "tensorboard" / f"stage{s}") for s in (1, 2))
    assert {"stage1/train/loss", "stage1/train/top1", "stage1/lr"} <= set(stage1.Tags()["scalars"])
    assert {"stage2/train/loss", "stage2/lr", "stage2/test/top1", "stage2/test/many", "stage2/test/few",
            "stage2/test/ece"} <= set(stage2.Tags()["scalars"])
    assert [e.step for e in stage1.Scalars("stage1/train/loss")] == [1, 2]
    session = events(out / "tensorboard")
    assert session.Scalars("stage2/final/top1")[0].value == pytest.approx(records[1]["top1"])
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(session.PluginTagToContent("hparams"))
    assert session.Tags()["images"] == []                   # plots=false


@pytest.mark.parametrize("stopped_at", ["stage1.step:2:5!term"])
def test_a_sigterm_resumed_run_has_the_uninterrupted_rows(tmp_path, stopped_at):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run_py(f"out_dir={whole}", *TINY, cwd=tmp_path).returncode == 0
    stopped = run_py(f"out_dir={cut}", *TINY, cwd=tmp_path, failpoint=stopped_at)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert [r["epoch"] for r in read_metrics_csv(cut / METRICS_FILE)] == ["1"]   # epoch 2 was cut short
    resumed = run_py(f"out_dir={cut}", "resume=true", *TINY, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def without_timings(folder):
        return [{k: v for k, v in row.items() if k not in TIMINGS} for row in read_metrics_csv(folder / METRICS_FILE)]
    assert len(without_timings(cut)) == 3
    assert without_timings(cut) == without_timings(whole)
    # the resumed stage's curve has each epoch once
    assert [e.step for e in events(cut / "tensorboard" / "stage1").Scalars("stage1/train/loss")] == [1, 2]


def test_mlflow_run_with_plots(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="logger=mlflow needs the mlflow extra: pip install 'lt_bench[mlflow]'")
    from mlflow.tracking import MlflowClient
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    records = run_training(compose(*TINY[:-1], "plots=true", "logger=mlflow", "activations.gumbel.clamp=null",
                                   out=out))
    client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("lt_bench").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["gumbel.clamp"] == "null"
    rows = read_metrics_csv(out / METRICS_FILE)
    loss = client.get_metric_history(run.info.run_id, "stage1/train/loss")
    assert [(m.step, m.value) for m in loss] == [(int(r["epoch"]), float(r["loss"])) for r in rows if r["stage"] == "1"]
    assert run.data.metrics["stage2/final/top1"] == pytest.approx(records[1]["top1"])
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id, "plots")) == [
        "plots/activations.png", "plots/per_class_accuracy.png", "plots/weight_norms.png"]
    assert set(events(out / "tensorboard").Tags()["images"]) == {
        "plots/per_class_accuracy", "plots/weight_norms", "plots/activations"}


def test_ddp_rank_zero_alone_writes_the_log(tmp_path):
    from tests.helpers.runs import TORCHRUN
    out = tmp_path / "ddp"
    proc = run_py(f"out_dir={out}", *TINY, cwd=tmp_path, launcher=TORCHRUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics_csv(out / METRICS_FILE)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1")]
    history = load_checkpoint(out / "checkpoints" / "stage1.pt")["progress"]["history"]
    assert [float(r["loss"]) for r in rows[:2]] == [h["loss"] for h in history]   # the all-reduced loss
    for stage in (1, 2):
        assert len(list((out / "tensorboard" / f"stage{stage}").glob("events.out.tfevents.*"))) == 1
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
