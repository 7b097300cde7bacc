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


def test_a_byte_order_mark_is_ignored(tmp_path):
    plain, marked = tmp_path / "plain.txt", tmp_path / "bom.txt"
    text = "train/a/1.jpg 0\ntrain/b/2.jpg 1\n"
    plain.write_text(text, encoding="utf-8")
    marked.write_text(text, encoding="utf-8-sig")
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    assert parse_split_file(marked, 2) == parse_split_file(plain, 2)
    assert read_split_file(marked, 2)[0].path == "train/a/1.jpg"


@pytest.mark.parametrize("line,message", [
    ("/etc/passwd 0", "path '/etc/passwd' is absolute; paths are relative to the data root"),
    ("\\\\server\\x.jpg 0", "is absolute"),
    ("../x.jpg 0", "path '../x.jpg' contains '..'; paths must stay under the data root"),
    ("a/../../x.jpg 0", "path 'a/../../x.jpg' contains '..'"),
    ("a/../b.jpg 0", "path 'a/../b.jpg' contains '..'"),     # refused too: no '..' at all
    ("a/..\\..\\x.jpg 0", "contains '..'"),
    ("a/b/.. 0", "contains '..'"),
])
def test_paths_leaving_the_data_root_are_refused(tmp_path, line, message):
    path = tmp_path / "split.txt"
    path.write_text(f"ok.jpg 1\n{line}\n")
    entries, problems = parse_split_file(path, 5)
    assert [e.path for e in entries] == ["ok.jpg"]
    assert len(problems) == 1 and str(problems[0]).startswith(f"{path}:2: ") and message in str(problems[0])
    with pytest.raises(DataError, match="1 problem"):
        read_split_file(path, 5)


@pytest.mark.parametrize("path_text", ["a..b.jpg", "..a/b.jpg", "a/.../b.jpg", "./a.jpg", "a b/c d.jpg"])
def test_dots_and_spaces_inside_names_are_fine(tmp_path, path_text):
    path = tmp_path / "split.txt"
    path.write_text(f"{path_text} 3\n")
    assert [(e.path, e.label) for e in read_split_file(path, 5)] == [(path_text, 3)]


@pytest.mark.parametrize("label,message", [
    ("0_0", "label '0_0' is not a plain non-negative integer (digits 0-9 only)"),   # int() takes it
    ("+1", "label '+1' is not a plain non-negative integer"),
    ("-1", "label '-1' is not a plain non-negative integer"),
    ("\u0661", "label '\u0661' is not a plain non-negative integer"),               # Arabic-Indic one
    ("\uff11", "label '\uff11' is not a plain non-negative integer"),               # full-width one
    ("1.0", "label '1.0' is not an integer"),
    ("1e0", "label '1e0' is not an integer"),
    ("0x1", "label '0x1' is not an integer"),
    ("9" * 5000, "is too large (0..4)"),                                             # int() would refuse
])
def test_labels_must_be_plain_ascii_digits(tmp_path, label, message):
    path = tmp_path / "split.txt"
    path.write_text(f"a.jpg {label}\n", encoding="utf-8")
    entries, problems = parse_split_file(path, 5)
    assert entries == [] and len(problems) == 1
    assert str(problems[0]).startswith(f"{path}:1: label ") and message in str(problems[0])
    assert len(str(problems[0])) < 300


def test_leading_zeros_and_line_ends(tmp_path):
    path = tmp_path / "split.txt"
    path.write_bytes(b"a.jpg 007\r\nb.jpg\t2 \r\n  c.jpg 0\n")
    assert [(e.path, e.label, e.line) for e in read_split_file(path, 8)] == [("a.jpg", 7, 1), ("b.jpg", 2, 2),
                                                                            ("c.jpg", 0, 3)]


def test_unusual_separators_and_bytes_are_named_at_their_line(tmp_path):
    path = tmp_path / "split.txt"
    # no-break space is not a separator; \x0c / \u2028 inside a line do not start a new line;
    # a byte that is not UTF-8 is named
    path.write_bytes("a.jpg\u00a01\nb\u2028.jpg 1\nc.jpg 2\n".encode() + b"d\xff.jpg 3\ne.jpg 4\n")
    entries, problems = parse_split_file(path, 5)
    assert [(e.path, e.line) for e in entries] == [("b\u2028.jpg", 2), ("c.jpg", 3), ("e.jpg", 5)]
    assert [str(p) for p in problems] == [
        f"{path}:1: expected '<image path> <label>', got 'a.jpg\\xa01'",
        f"{path}:4: not valid UTF-8 text: b'd\\xff.jpg 3'",
    ]
