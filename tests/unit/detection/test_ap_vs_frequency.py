"""lt-bench det-ap-vs-frequency on hand-made records: the per-group and binned means against
numpy on the same numbers, the picture, and the refusals."""
import json

import numpy as np
import pytest

from lt_bench.detection.analysis.ap_vs_frequency import binned_means, group_means, load_run, main

COUNTS = [1, 3, 8, 10, 12, 40, 100, 150, 900, 5000]
GROUPS = ["r", "r", "r", "r", "c", "c", "c", "f", "f", "f"]
SEGM = [0.0, 5.0, None, 10.0, 20.0, 25.0, 30.0, 35.0, 40.0, 50.0]     # None: no ground truth evaluated


def record(segm, method="gumbel", **extra):
    return {"kind": "detection", "task": "lvis", "method": method, "AP": 21.5,
            "per_category": {"category_ids": list(range(1, 11)), "names": [f"c{i}" for i in range(1, 11)],
                             "image_count": COUNTS, "frequency": GROUPS, "AP": segm,
                             "APbox": [None if v is None else v + 1 for v in segm]}, **extra}


def write_run(folder, *records):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(list(records)))
    return folder


def test_load_run_keeps_categories_with_an_ap_and_the_means_are_numpys(tmp_path):
    run = write_run(tmp_path / "a", {"kind": "classification", "top1": 1.0}, record(SEGM))
    rec, counts, groups, aps = load_run(run)
    assert rec["method"] == "gumbel" and len(aps) == 9 and 8 not in counts.tolist()
    assert group_means(groups, aps) == {"APr": pytest.approx(np.mean([0, 5, 10])),
                                        "APc": pytest.approx(np.mean([20, 25, 30])),
                                        "APf": pytest.approx(np.mean([35, 40, 50]))}
    assert load_run(run / "results.json", "bbox")[3].tolist() == [v + 1 for v in SEGM if v is not None]
    bins = binned_means(counts, aps, bins_per_decade=1)     # decades [1,10) [10,100) [100,1000) [1000,10^4)
    assert [(b["from"], b["categories"], b["mean_AP"]) for b in bins] == [
        (1.0, 2, 2.5), (10.0, 3, pytest.approx(np.mean([10, 20, 25]))), (100.0, 3, pytest.approx(35.0)),
        (1000.0, 1, 50.0)]
    assert sum(b["categories"] for b in binned_means(counts, aps)) == 9


def test_command_writes_the_picture_and_the_means(tmp_path, capsys):
    a = write_run(tmp_path / "a", record(SEGM, "sigmoid"))
    b = write_run(tmp_path / "b", record([v if v is None else v + 10 for v in SEGM]))
    out, summary = tmp_path / "ap.png", tmp_path / "ap.json"
    assert main([str(a), str(b), "--out", str(out), "--json", str(summary)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    runs = json.loads(summary.read_text())["runs"]
    assert [r["label"] for r in runs] == ["sigmoid", "gumbel"]
    assert runs[1]["APr"] == pytest.approx(runs[0]["APr"] + 10) and runs[0]["categories"] == 9
    assert main([str(a), "--out", str(out)]) == 2                       # never overwritten silently
    assert f"{out} exists" in capsys.readouterr().err
    assert main([str(a), "--out", str(out), "--overwrite", "--labels", "x"]) == 0


@pytest.mark.parametrize("records, message", [
    ([], "no detection record"),
    ([{"kind": "detection", "method": "gumbel", "per_category": None}], "no per_category AP"),
    ([record(SEGM), record(SEGM)], "2 detection records"),
    ([record([None] * 10)], "no category has both"),
])
def test_runs_without_per_category_ap_are_refused_by_name(tmp_path, capsys, records, message):
    run = write_run(tmp_path / "r", *records)
    assert main([str(run), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(run / "results.json") in err and not (tmp_path / "x.png").exists()


def test_labels_must_match_the_runs(tmp_path, capsys):
    run = write_run(tmp_path / "r", record(SEGM))
    assert main([str(run), "--labels", "a", "b", "--out", str(tmp_path / "x.png")]) == 2
    assert "2 labels for 1 runs" in capsys.readouterr().err
