"""lt-bench compare on two fabricated run folders: the exact rows of both tables."""
import csv
import io
import json

import pytest

from lt_bench.compare import compare_text, flatten, main, run_labels
from lt_bench.errors import ConfigError, DataError
from tests.helpers.tables import md_table

CONFIG_A = """\
task:
  name: cifar100lt
imbalance: 100
seed: 0
out_dir: /runs/a
device: cpu
stage2:
  method: retrain
  lr: 0.0001
  milestones: [40, 50]
  activation: gumbel
"""
CONFIG_B = """\
task:
  name: cifar100lt
imbalance: 100
seed: 0
out_dir: /runs/b
device: cuda
stage2:
  method: retrain
  lr: 0.001
  milestones: [30]
  activation: gumbel
  sampler: class_balanced
"""


def record(stage, method, top1, setup, **extra):
    return {"task": "cifar100lt", "imbalance": 100, "model": "resnet32", "stage": stage, "method": method,
            "top1": top1, "top5": 70.0, "many": top1 + 20, "medium": top1, "few": None, "ece": 5.0,
            "seed": 0, "setup_hash": setup, **extra}


@pytest.fixture
def two_runs(tmp_path):
    root = tmp_path / "runs"
    for name, config, records in (
            ("lr1e-4", CONFIG_A, [record(1, "softmax", 38.0, "3fa2c1aaaa"), record(2, "gumbel", 45.0, "77b0e1aaaa")]),
            ("lr1e-3", CONFIG_B, [record(1, "softmax", 38.0, "3fa2c1aaaa"), record(2, "gumbel", 45.5, "c0ffeebbbb"),
                                  record(2, "sigmoid", 43.25, "dd00eecccc")])):
        (root / name).mkdir(parents=True)
        (root / name / "config.yaml").write_text(config)
        (root / name / "results.json").write_text(json.dumps(records))
    return root / "lr1e-4", root / "lr1e-3"



def test_config_and_metric_differences_side_by_side(two_runs):
    text = compare_text(two_runs)
    assert md_table(text, "config differences") == [
        ["key", "lr1e-4", "lr1e-3"],
        ["---", "---", "---"],
        ["stage2.lr", "0.0001", "0.001"],
        ["stage2.milestones", "[40, 50]", "[30]"],
        ["stage2.sampler", "(absent)", "class_balanced"],
    ]
    # runtime keys (not part of the config hash) are named, not tabled
    assert "runtime keys that differ (not part of the config hash; --all-keys shows them): device, out_dir" in text
    assert md_table(text, "metrics") == [
        ["stage", "method", "metric", "lr1e-4", "lr1e-3"],
        ["---", "---", "---", "---:", "---:"],
        ["1", "softmax", "cfg", "3fa2c1", "3fa2c1"],
        ["1", "softmax", "top1", "38.00", "38.00 Δ +0.00"],
        ["1", "softmax", "many", "58.00", "58.00 Δ +0.00"],
        ["1", "softmax", "medium", "38.00", "38.00 Δ +0.00"],
        ["1", "softmax", "few", "-", "-"],
        ["1", "softmax", "ece", "5.00", "5.00 Δ +0.00"],
        ["2", "gumbel", "cfg", "77b0e1", "c0ffee"],
        ["2", "gumbel", "top1", "45.00", "45.50 Δ +0.50"],
        ["2", "gumbel", "many", "65.00", "65.50 Δ +0.50"],
        ["2", "gumbel", "medium", "45.00", "45.50 Δ +0.50"],
        ["2", "gumbel", "few", "-", "-"],
        ["2", "gumbel", "ece", "5.00", "5.00 Δ +0.00"],
        ["2", "sigmoid", "cfg", "-", "dd00ee"],
        ["2", "sigmoid", "top1", "-", "43.25"],
        ["2", "sigmoid", "many", "-", "63.25"],
        ["2", "sigmoid", "medium", "-", "43.25"],
        ["2", "sigmoid", "few", "-", "-"],
        ["2", "sigmoid", "ece", "-", "5.00"],
    ]
    assert "metrics (Δ vs lr1e-4)" in text
    assert f"- lr1e-3: {two_runs[1]}" in text


def test_all_keys_shows_runtime_keys_marked(two_runs):
    rows = md_table(compare_text(two_runs, all_keys=True), "config differences")
    assert rows[2:] == [["device (runtime)", "cpu", "cuda"], ["out_dir (runtime)", "/runs/a", "/runs/b"],
                        ["stage2.lr", "0.0001", "0.001"], ["stage2.milestones", "[40, 50]", "[30]"],
                        ["stage2.sampler", "(absent)", "class_balanced"]]


def test_json_and_csv(two_runs):
    data = json.loads(compare_text(two_runs, "json"))
    assert [r["label"] for r in data["runs"]] == ["lr1e-4", "lr1e-3"]
    assert data["config"][0] == {"key": "stage2.lr", "runtime": False, "values": {"lr1e-4": "0.0001", "lr1e-3": "0.001"}}
    assert data["runtime_keys_hidden"] == ["device", "out_dir"]
    top1 = next(m for m in data["metrics"] if (m["stage"], m["method"], m["metric"]) == (2, "gumbel", "top1"))
    assert top1["values"] == {"lr1e-4": 45.0, "lr1e-3": 45.5} and top1["delta"] == {"lr1e-4": None, "lr1e-3": 0.5}
    rows = list(csv.DictReader(io.StringIO(compare_text(two_runs, "csv"))))
    assert {k: rows[0][k] for k in ("section", "key", "run", "value")} == \
        {"section": "config", "key": "stage2.lr", "run": "lr1e-4", "value": "0.0001"}
    gumbel = [r for r in rows if r["method"] == "gumbel" and r["metric"] == "top1"]
    assert [(r["run"], r["value"], r["delta"]) for r in gumbel] == [("lr1e-4", "45.00", ""), ("lr1e-3", "45.50", "0.50")]


def test_runs_without_config_or_records(two_runs, tmp_path):
    only_records = tmp_path / "other_tool"
    only_records.mkdir()
    (only_records / "results.json").write_text(json.dumps([record(2, "gumbel", 44.0, None)]))
    text = compare_text([two_runs[0], only_records])
    assert "no config.yaml in other_tool (- in its column)" in text
    assert "no differences in the configuration" in text            # nothing to compare it with
    assert ["2", "gumbel", "top1", "45.00", "44.00 Δ -1.00"] in md_table(text, "metrics")
    assert ["2", "gumbel", "cfg", "77b0e1", "-"] in md_table(text, "metrics")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither config.yaml nor results.json"):
        compare_text([two_runs[0], tmp_path / "empty"])
    with pytest.raises(ConfigError, match="at least two runs"):
        compare_text([two_runs[0]])


def test_labels_and_flatten(tmp_path):
    assert run_labels([tmp_path / "seed0" / "crt", tmp_path / "seed1" / "crt"]) == ["seed0/crt", "seed1/crt"]
    assert run_labels([tmp_path / "a", tmp_path / "a"]) == [f"{tmp_path / 'a'} (1)", f"{tmp_path / 'a'} (2)"]
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1, 2], "e": None}) == {"a.b": 1, "a.c": {}, "d": [1, 2], "e": None}


def test_command_line(two_runs, capsys):
    assert main([str(p) for p in two_runs]) == 0
    assert capsys.readouterr().out == compare_text(two_runs)
    assert main([str(two_runs[0]), str(two_runs[0].parent / "nowhere")]) == 2
    assert "DataError" in capsys.readouterr().err
    from lt_bench.cli import main as cli_main
    with pytest.raises(SystemExit) as done:
        cli_main(["compare", *map(str, two_runs), "--format", "json"])
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out)["runtime_keys_hidden"] == ["device", "out_dir"]
