"""The run's log without training: metrics.csv rows and their rebuilding on resume, the tag
scheme, TensorBoard's curves, HParams session and images read back, the optional trackers
(offline, in the run folder; skipped without their packages)."""
import json
import time

import numpy as np
import pytest
from PIL import Image

from lt_bench.errors import ConfigError
from lt_bench.run_logs import (METRICS_FILE, TRACKERS_FILE, RunLog, TensorBoard, check_logger, csv_columns, csv_row,
                               epoch_scalars, final_metrics, open_run_log, read_metrics_csv, run_hparams)


def epoch_stats(epoch, evaluated=False, select=False):
    stats = {"epoch": epoch, "loss": 1.0 / (epoch + 0.3), "train_top1": 10.0 * epoch + 1 / 3, "lr": 0.1 / 3 ** epoch,
             "seconds": 0.5, "data_seconds": 0.1, "items": 331, "skipped": 0}
    if evaluated:
        stats.update(test_top1=40.0 + epoch / 7, test_many=90.0, test_medium=50.0, test_few=10.0 + 1 / 9,
                     test_ece=12.5, test_nll=1.25, test_brier=0.5)
    if select:
        stats["select_top1"] = 33.0 + epoch / 3
    return stats


def as_float(cell):
    return None if cell == "" else float(cell)


def test_metrics_csv_one_row_per_epoch_with_exact_values(tmp_path):
    run_log = RunLog(tmp_path, split="test")
    history1 = [epoch_stats(1), epoch_stats(2)]
    run_log.start_stage(1, None, {"history": [], "epochs_done": 0})
    for stats in history1:
        run_log.log_epoch(1, stats)
    run_log.start_stage(2, None, {"history": []})
    last = epoch_stats(1, evaluated=True)
    run_log.log_epoch(2, last)
    rows = read_metrics_csv(tmp_path / METRICS_FILE)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1")]
    assert list(rows[0])[:5] == ["epoch", "stage", "loss", "lr", "train_top1"]
    assert list(rows[0])[-2:] == ["seconds", "data_seconds"]
    for row, stats in zip(rows, [*history1, last]):
        for key in ("loss", "lr", "train_top1", "seconds"):
            assert float(row[key]) == stats[key]                  # full precision: exactly the history's value
    assert rows[0]["test_top1"] == "" and rows[0]["test_few"] == ""   # not evaluated: empty cells
    assert float(rows[2]["test_top1"]) == last["test_top1"] and float(rows[2]["test_few"]) == last["test_few"]
    assert "items" not in rows[0] and "skipped" not in rows[0]


def test_a_restarted_stage_rewrites_its_rows_from_the_history(tmp_path):
    """Resumed after epoch 2 of 3 (epoch 3 had been written, then lost with the process): the
    file is rebuilt from the checkpoint's history, the earlier stage's rows stay, none doubles."""
    first = RunLog(tmp_path)
    first.start_stage(1, None, {"history": []})
    for e in (1, 2):
        first.log_epoch(1, epoch_stats(e))
    first.start_stage(2, None, {"history": []})
    for e in (1, 2, 3):
        first.log_epoch(2, epoch_stats(e, evaluated=True))
    resumed = RunLog(tmp_path)
    resumed.start_stage(1, None, {"history": [epoch_stats(1), epoch_stats(2)], "complete": True})
    resumed.start_stage(2, None, {"history": [epoch_stats(1, True), epoch_stats(2, True)], "epochs_done": 2})
    assert [(r["stage"], r["epoch"]) for r in read_metrics_csv(tmp_path / METRICS_FILE)] == [
        ("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    resumed.log_epoch(2, epoch_stats(3, evaluated=True))
    rows = read_metrics_csv(tmp_path / METRICS_FILE)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2"), ("2", "3")]
    assert float(rows[-1]["loss"]) == epoch_stats(3)["loss"]
    assert not list(tmp_path.glob(".*.tmp"))


def test_columns_and_tags_name_the_evaluation_split(tmp_path):
    run_log = RunLog(tmp_path, split="val")
    run_log.start_stage(2, None, {"history": []})
    run_log.log_epoch(2, epoch_stats(1, evaluated=True))
    columns = list(read_metrics_csv(tmp_path / METRICS_FILE)[0])
    assert "val_top1" in columns and "val_many" in columns and not any(c.startswith("test_") for c in columns)
    tags = epoch_scalars(2, epoch_stats(3, evaluated=True), "val")
    assert {"stage2/train/loss", "stage2/train/top1", "stage2/lr", "stage2/val/top1", "stage2/val/few",
            "stage2/val/ece", "stage2/time/epoch_seconds"} <= set(tags)
    assert not any("test" in t for t in tags) and "stage2/train/skipped_steps" not in tags   # none skipped
    # eval.split=test with eval.select=val: the selecting top-1 is the val split's
    selected = epoch_scalars(1, epoch_stats(1, evaluated=True, select=True), "test")
    assert selected["stage1/val/top1"] == epoch_stats(1, select=True)["select_top1"]
    assert selected["stage1/test/top1"] == epoch_stats(1, evaluated=True)["test_top1"]
    assert csv_columns([{"epoch": 1, "stage": 1, "test_top1": 1.0, "val_top1": 2.0, "test_new": 3.0}], "test")[5:] \
        == ["test_top1", "test_new", "val_top1", "seconds", "data_seconds"]
    # an epoch names the split it was evaluated on (eval.split may change on resume): that name wins
    named = {**epoch_stats(1, evaluated=True), "eval_split": "val"}
    assert "stage1/val/few" in epoch_scalars(1, named, "test") and "eval_split" not in csv_row(1, named, "test")
    assert "val_few" in csv_row(1, named, "test")


def png(path, colour=(200, 30, 30)):
    Image.fromarray(np.full((40, 60, 3), colour, dtype=np.uint8)).save(path)
    return path


def load_events(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def hparams_plugin_data(events) -> dict:
    from tensorboard.plugins.hparams import plugin_data_pb2
    content = events.PluginTagToContent("hparams")
    return {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}


def test_tensorboard_curves_session_and_images_read_back(tmp_path, make_cfg):
    tb_root = tmp_path / "tensorboard"
    run_log = RunLog(tmp_path, split="test", trackers=[TensorBoard(tb_root)])
    for stage in (1, 2):
        run_log.start_stage(stage, tb_root / f"stage{stage}", {"history": []})
        for e in (1, 2):
            run_log.log_epoch(stage, epoch_stats(e, evaluated=stage == 2))
        run_log.end_stage(stage)
    records = [{"stage": s, "epochs": 2, "top1": 50.0 + s, "top5": 90.0, "many": 80.0, "medium": 50.0, "few": None,
                "ece": 5.0, "nll": 1.0, "brier": 0.6, "train_counts": [30, 10, 20], "per_class_top1": [90.0, 10.0, 50.0]}
               for s in (1, 2)]
    for record in records:
        run_log.log_final(record)
    hparams = run_hparams(make_cfg("activations.gumbel.clamp=null"))
    run_log.log_run(hparams, records, [png(tmp_path / "per_class_accuracy.png"), png(tmp_path / "activations.png")])
    run_log.close("finished")

    stage2 = load_events(tb_root / "stage2")
    assert {"stage2/train/loss", "stage2/train/top1", "stage2/lr", "stage2/test/top1", "stage2/test/many"} \
        <= set(stage2.Tags()["scalars"])
    assert [e.step for e in stage2.Scalars("stage2/train/loss")] == [1, 2]
    assert stage2.Scalars("stage2/lr")[1].value == pytest.approx(epoch_stats(2)["lr"])
    assert not any(t.startswith("stage1/") for t in stage2.Tags()["scalars"])

    session = load_events(tb_root)
    assert {"plots/per_class_accuracy", "plots/activations"} <= set(session.Tags()["images"])
    image = session.Images("plots/activations")[0]
    assert (image.width, image.height) == (60, 40)
    assert "stage1/final/top1" in session.Tags()["scalars"] and "stage2/final/few" not in session.Tags()["scalars"]
    ranks = session.Scalars("stage1/final/per_class_top1_by_frequency_rank")
    assert [(e.step, e.value) for e in ranks] == [(0, 90.0), (1, 50.0), (2, 10.0)]    # by training images
    data = hparams_plugin_data(session)
    assert set(data) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    metrics = [m.name.tag for m in data["_hparams_/experiment"].experiment.metric_infos]
    assert metrics == list(final_metrics(records)) and "stage2/final/top1" in metrics
    values = data["_hparams_/session_start_info"].session_start_info.hparams
    assert {"task", "model", "seed", "imbalance", "stage1.lr", "stage1.epochs", "stage2.lr", "stage2.epochs",
            "stage2.method", "stage2.activation", "gumbel.clamp"} <= set(values)
    assert values["task"].string_value == "digits_lt" and values["gumbel.clamp"].string_value == "null"
    assert values["stage2.lr"].number_value == pytest.approx(hparams["stage2.lr"])


def test_hparams_are_flat_scalars_with_the_same_keys_for_every_run(make_cfg):
    a = run_hparams(make_cfg())
    b = run_hparams(make_cfg("stage2=crt", "task=cifar100lt", "activations.gumbel.clamp=null"))
    assert set(a) == set(b)
    assert all(isinstance(v, (str, int, float, bool)) for v in (*a.values(), *b.values()))
    assert a["gumbel.clamp"] == "[-4.0, 10.0]" and b["gumbel.clamp"] == "null"
    assert (a["task"], a["stage2.activation"], b["stage2.method"]) == ("digits_lt", "gumbel", "crt")


def test_logger_config_is_checked(make_cfg, monkeypatch):
    assert check_logger(make_cfg())["name"] == "tensorboard"
    assert check_logger(make_cfg("logger=none")) == {"name": "none", "tensorboard": False}
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"logger=wandb needs the wandb package: pip install 'lt_bench\[wandb\]'"):
        check_logger(make_cfg("logger=wandb"))


def test_logger_none_writes_metrics_csv_only(make_cfg, tmp_path):
    run_log = open_run_log(make_cfg("logger=none"), tmp_path, resume=False)
    assert run_log.trackers == []
    run_log.start_stage(1, tmp_path / "tensorboard" / "stage1", {"history": []})
    run_log.log_epoch(1, epoch_stats(1))
    run_log.close()
    assert (tmp_path / METRICS_FILE).is_file() and not (tmp_path / "tensorboard").exists()


def drive(run_log, stages=(1, 2), epochs=(1, 2)):
    for stage in stages:
        run_log.start_stage(stage, None, {"history": []})
        for e in epochs:
            run_log.log_epoch(stage, epoch_stats(e, evaluated=stage == 2))
        run_log.end_stage(stage)


def test_mlflow_offline_in_the_run_folder(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="logger=mlflow needs the mlflow extra: pip install 'lt_bench[mlflow]'")
    from mlflow.tracking import MlflowClient
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = make_cfg("logger=mlflow")
    run_log = open_run_log(cfg, tmp_path, resume=False, name="digits_lt/run")
    assert [type(t).__name__ for t in run_log.trackers] == ["TensorBoard", "MLflow"]
    drive(run_log)
    records = [{"stage": 2, "epochs": 2, "top1": 61.5, "many": 90.0, "medium": 60.0, "few": 30.0, "ece": 4.0}]
    run_log.log_final(records[0])
    run_log.log_run(run_hparams(cfg), records, [png(tmp_path / "per_class_accuracy.png")])
    run_log.close("finished")
    run_id = json.loads((tmp_path / TRACKERS_FILE).read_text())["mlflow"]
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "digits_lt/run"
    assert run.data.params["task"] == "digits_lt" and run.data.params["stage2.activation"] == "gumbel"
    loss = client.get_metric_history(run_id, "stage1/train/loss")
    assert [(m.step, m.value) for m in loss] == [(1, epoch_stats(1)["loss"]), (2, epoch_stats(2)["loss"])]
    assert run.data.metrics["stage2/test/top1"] == epoch_stats(2, evaluated=True)["test_top1"]
    assert run.data.metrics["stage2/final/top1"] == 61.5
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/per_class_accuracy.png"]
    # a resumed run continues the same MLflow run
    again = open_run_log(cfg, tmp_path, resume=True)
    assert again.trackers[1].run_id == run_id
    again.close("interrupted")
    assert client.get_run(run_id).info.status == "KILLED"


def test_wandb_offline_in_the_run_folder(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="logger=wandb needs the wandb extra: pip install 'lt_bench[wandb]'")
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME"):
        monkeypatch.delenv(var, raising=False)
    cfg = make_cfg("logger=wandb")
    run_log = open_run_log(cfg, tmp_path, resume=False, name="digits_lt/run")
    assert [type(t).__name__ for t in run_log.trackers] == ["TensorBoard", "Wandb"]
    drive(run_log)
    run_log.log_run(run_hparams(cfg), [{"stage": 2, "top1": 61.5}], [png(tmp_path / "activations.png")])
    run_log.close("finished")
    run_id = json.loads((tmp_path / TRACKERS_FILE).read_text())["wandb"]
    offline = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1, list((tmp_path / "wandb").iterdir())
    # the records, protobuf (names stay readable), written by wandb's service shortly after finish()
    names = (b"stage1/train/loss", b"stage2/test/top1", b"stage2/epoch", b"stage2/final/top1", b"stage1.lr",
             b"digits_lt")
    deadline = time.monotonic() + 30
    while True:
        data = (offline[0] / f"run-{run_id}.wandb").read_bytes()
        if all(name in data for name in names) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert [name for name in names if name not in data] == []
    assert list((offline[0] / "files" / "media" / "images").rglob("*.png"))     # the plot


def test_the_logger_does_not_change_what_a_run_computes(make_cfg):
    from lt_bench.run_folder import config_hash, training_hash
    base = make_cfg()
    for other in (make_cfg("logger=none"), make_cfg("logger=mlflow")):
        assert config_hash(other) == config_hash(base) and training_hash(other) == training_hash(base)
    without = make_cfg()
    from omegaconf import open_dict
    with open_dict(without):
        del without["logger"]                   # a config composed before the logger group existed
    assert training_hash(without) == training_hash(base)
