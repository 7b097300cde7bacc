"""ImageNet-LT / Places-LT: split files, the manifest, data checks, the image pipeline
(the training runs on the tiny tree are in tests/integration/test_split_file_runs.py)."""
import pytest

from lt_bench.validate import validate
from lt_bench.data import build_data
from lt_bench.data.checks import check_split_file, run_check_data
from lt_bench.data.split_file import load_manifest, parse_split_file, read_split_file
from lt_bench.errors import ConfigError, DataError
from lt_bench.data.synthetic import TRAIN_COUNTS

from tests.conftest import ROOT
from tests.helpers.splits import tiny_overrides

SHARED_SPLITS = ROOT.parent / "shared" / "data" / "splits"
needs_shared = pytest.mark.skipif(not SHARED_SPLITS.is_dir(), reason="../shared/data/splits not present")


@needs_shared
@pytest.mark.parametrize("name,classes", [
    ("ImageNet_LT_val.txt", 1000), ("ImageNet_LT_test.txt", 1000),
    ("Places_LT_train.txt", 365), ("Places_LT_val.txt", 365), ("Places_LT_test.txt", 365),
])
def test_manifest_matches_the_real_split_files(name, classes):
    split = name.rsplit("_", 1)[1][:-4]
    report = check_split_file(split, SHARED_SPLITS / name, classes, load_manifest())
    known = load_manifest()[name]
    assert report.problems == [] and report.official == "yes"
    for key in ("lines", "classes", "max_per_class", "min_per_class", "sha256"):
        assert report.stats[key] == known[key], key
    if name == "Places_LT_train.txt":
        assert report.stats["shots"] == {"many": 131, "medium": 163, "few": 71}


def test_manifest_knows_the_imagenet_lt_training_file():
    known = load_manifest()["ImageNet_LT_train.txt"]
    assert (known["lines"], known["classes"], known["max_per_class"], known["min_per_class"]) == (115846, 1000, 1280, 5)
    assert known["sha256"] == "efdbdad4f050237c310b2f354cf95a8b1d7c8d57a63c4ea4bb6bf2bcb012f37f"


@needs_shared
def test_altered_and_truncated_split_files_are_named(tmp_path):
    manifest = load_manifest()
    altered = tmp_path / "Places_LT_val.txt"
    text = (SHARED_SPLITS / "Places_LT_val.txt").read_text()
    altered.write_text(text.replace(" 0\n", " 1\n", 1))
    report = check_split_file("val", altered, 365, manifest)
    assert [str(p) for p in report.problems] == [
        f"{altered}: sha256 differs from the official file: max_per_class 21 (official 20), "
        "min_per_class 19 (official 20)"]
    truncated = tmp_path / "Places_LT_test.txt"
    truncated.write_bytes((SHARED_SPLITS / "Places_LT_test.txt").read_bytes()[:100_000])
    messages = [str(p) for p in check_split_file("test", truncated, 365, manifest).problems]
    assert f"{truncated}: does not end with a newline (truncated file?)" in messages
    assert any(m.startswith(f"{truncated}: sha256 differs") and "lines" in m for m in messages)


def test_malformed_lines_are_reported_with_file_and_line(tmp_path):
    path = tmp_path / "split.txt"
    path.write_text("a.jpg 0\nb.jpg\nc.jpg x\nd.jpg 7\na.jpg 1\ne f.jpg 2\n")
    entries, problems = parse_split_file(path, num_classes=5)
    assert [(e.path, e.label, e.line) for e in entries] == [("a.jpg", 0, 1), ("e f.jpg", 2, 6)]
    assert [str(p) for p in problems] == [
        f"{path}:2: expected '<image path> <label>', got 'b.jpg'",
        f"{path}:3: label 'x' is not an integer",
        f"{path}:4: label 7 out of range (0..4)",
        f"{path}:5: a.jpg is listed twice (first on line 1)",
    ]
    with pytest.raises(DataError, match="4 problem"):
        read_split_file(path, 5)


def test_split_file_task_builds_the_long_tailed_sets(tree, make_cfg):
    cfg = make_cfg(*tiny_overrides(tree))
    bundle = build_data(cfg)
    assert bundle.train_counts == TRAIN_COUNTS and len(bundle.test) == 18 and bundle.eval_split == "test"
    image, label = bundle.train[0]
    assert tuple(image.shape) == (3, 32, 32) and label == 0
    image, _ = bundle.test[0]
    assert tuple(image.shape) == (3, 32, 32)


def test_check_data_reports_and_exits_nonzero(tree, make_cfg, capsys):
    splits_dir, images = tree
    cfg = make_cfg(*tiny_overrides(tree), "mode=check_data")
    assert run_check_data(cfg) == 0
    assert "0 problem(s)" in capsys.readouterr().out
    test_file = splits_dir / "Tiny_LT_test.txt"
    victim = test_file.read_text().splitlines()[4].split()[0]
    (images / victim).write_bytes(b"not a jpeg")
    with test_file.open("a") as f:
        f.write("test/n00000009/x.JPEG 9\n")
    assert run_check_data(cfg) == 1
    out = capsys.readouterr().out
    assert f"{test_file}:5: cannot read image {images / victim}" in out
    assert f"{test_file}:19: label 9 out of range (0..5)" in out
    assert "Tiny_LT_train.txt: 36 lines, 6 classes, 12..2 per class  many/medium/few 0/0/6" in out


def test_fixed_split_refuses_an_imbalance_and_unknown_eval_split(make_cfg):
    with pytest.raises(ConfigError, match="task imagenetlt has a fixed long-tailed split.*remove imbalance=100"):
        validate(make_cfg("task=imagenetlt", "imbalance=100"))
    with pytest.raises(ConfigError, match="unknown eval.split for task cifar100lt 'val'; valid: test"):
        validate(make_cfg("task=cifar100lt", "eval.split=val"))
