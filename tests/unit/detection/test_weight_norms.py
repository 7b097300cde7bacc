"""lt-bench det-weight-norms: per-category classifier norms in training-frequency order (checked
against numpy on hand-made matrices), the background row dropped, and checkpoints read without
running code: a bare state dict, an mmengine runner's checkpoint (HistoryBuffer, numpy values)
through inert stand-ins, and a malicious pickle refused before it runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("msgspec", reason="the detection extra is not installed (make det)")
pytest.importorskip("matplotlib")

from lt_bench.detection.analysis.weight_norms import (  # noqa: E402
    STAND_INS, Unread, load_checkpoint, main, read_categories, weight_norms)
from lt_bench.errors import ConfigError, DataError  # noqa: E402

from tests.conftest import ROOT  # noqa: E402
from tests.helpers.lvis import SHARED_LVIS, needs_shared  # noqa: E402

KEY = "roi_head.bbox_head.fc_cls.weight"
# Listed out of id order on purpose: the rows follow ascending id (2, 3, 5, 7, 9).
CATEGORIES = [
    {"id": 5, "name": "five", "frequency": "c", "image_count": 40},
    {"id": 2, "name": "two", "frequency": "f", "image_count": 500},
    {"id": 9, "name": "nine", "frequency": "c", "image_count": 40},      # ties with 5: id order
    {"id": 3, "name": "three", "frequency": "r", "image_count": 3},
    {"id": 7, "name": "seven", "frequency": "f", "image_count": 1000},
]
RANKED_IDS = [7, 2, 5, 9, 3]
ROW_OF_ID = {2: 0, 3: 1, 5: 2, 7: 3, 9: 4}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def weights(rows: int = 5, dim: int = 8, seed: int = 0) -> torch.Tensor:
    """Random rows, the first with the hand-checkable norm 5 (3, 4, 0, ...)."""
    w = torch.from_numpy(np.random.default_rng(seed).normal(size=(rows, dim)))
    w[0] = 0
    w[0, :2] = torch.tensor([3.0, 4.0])
    return w.float()


@pytest.fixture
def cats_file(tmp_path) -> Path:
    path = tmp_path / "cats.json"
    path.write_text(json.dumps({"categories": CATEGORIES, "images": [], "annotations": []}))
    return path


def save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_norms_in_frequency_order_match_numpy(tmp_path, cats_file, capsys):
    w_a, w_b = weights(), weights(seed=1) * 2
    a = save(tmp_path / "a.pth", {KEY: w_a, "roi_head.bbox_head.fc_cls.bias": torch.zeros(5)})   # bare state dict
    b = save(tmp_path / "b.pth", {"state_dict": {KEY: w_b}, "meta": {"epoch": 12}})
    status, out, err = run(capsys, a, b, "--ann", cats_file, "--out", tmp_path / "n.png",
                           "--json", tmp_path / "n.json", "--labels", "softmax", "gumbel")
    assert status == 0, err
    assert (tmp_path / "n.png").read_bytes()[:8] == PNG_MAGIC
    report = json.loads((tmp_path / "n.json").read_text())
    assert [c["id"] for c in report["categories"]] == RANKED_IDS
    assert [c["name"] for c in report["categories"]] == ["seven", "two", "five", "nine", "three"]
    assert [c["image_count"] for c in report["categories"]] == [1000, 500, 40, 40, 3]
    assert [c["frequency"] for c in report["categories"]] == ["f", "f", "c", "c", "r"]
    for label, w in (("softmax", w_a.double().numpy()), ("gumbel", w_b.double().numpy())):
        expected = [np.sqrt(np.sum(w[ROW_OF_ID[i]] ** 2)) for i in RANKED_IDS]
        np.testing.assert_allclose([c["norm"][label] for c in report["categories"]], expected, rtol=1e-12)
        means = report["group_mean_norm"][label]
        np.testing.assert_allclose(means["c"], (expected[2] + expected[3]) / 2, rtol=1e-12)
        np.testing.assert_allclose(means["r"], expected[4], rtol=1e-12)
    assert report["categories"][1]["norm"]["softmax"] == pytest.approx(5.0)      # id 2 = row 0 = (3, 4, 0, ...)
    assert [r["background_row_dropped"] for r in report["checkpoints"]] == [False, False]
    assert "softmax: roi_head.bbox_head.fc_cls.weight (5, 8)" in out


def test_background_row_is_dropped(tmp_path, cats_file, capsys):
    w = weights(rows=6)
    w[5] = 100.0                                                 # mmdet's background logit: last
    ckpt = save(tmp_path / "bg.pth", {"state_dict": {KEY: w}})
    status, out, err = run(capsys, ckpt, "--ann", cats_file, "--out", tmp_path / "n.png", "--json", tmp_path / "n.json")
    assert status == 0, err
    assert "the last row (mmdet's background) dropped" in out
    report = json.loads((tmp_path / "n.json").read_text())
    assert report["checkpoints"][0]["background_row_dropped"] is True
    assert report["checkpoints"][0]["shape"] == [6, 8]
    norms = [c["norm"]["bg"] for c in report["categories"]]
    np.testing.assert_allclose(norms, np.linalg.norm(w.double().numpy()[[ROW_OF_ID[i] for i in RANKED_IDS]], axis=1))
    assert max(norms) < 100
    bad = save(tmp_path / "seven.pth", {KEY: weights(rows=7)})
    with pytest.raises(DataError, match=r"seven.pth: .*7 rows, which fit neither the 5 categories"):
        weight_norms([bad], cats_file)


def test_classifier_key_choice(tmp_path, cats_file):
    cascade = save(tmp_path / "cascade.pth", {f"roi_head.bbox_head.{s}.fc_cls.weight": weights() for s in range(3)})
    with pytest.raises(ConfigError, match=r"3 keys end in fc_cls.weight \(roi_head.bbox_head.0.fc_cls.weight, "
                                          r"roi_head.bbox_head.1.fc_cls.weight, roi_head.bbox_head.2.fc_cls.weight\)"):
        weight_norms([cascade], cats_file)
    report = weight_norms([cascade], cats_file, key="roi_head.bbox_head.2.fc_cls.weight")
    assert report["checkpoints"][0]["key"] == "roi_head.bbox_head.2.fc_cls.weight"
    with pytest.raises(ConfigError, match="has no 'nope'"):
        weight_norms([cascade], cats_file, key="nope")
    with pytest.raises(ConfigError, match="--labels needs 1 distinct labels"):
        weight_norms([cascade], cats_file, labels=["a", "b"])


def test_class_names_in_the_checkpoint_must_follow_the_rows(tmp_path, cats_file):
    names = ["two", "three", "five", "seven", "nine"]                 # ascending id
    good = save(tmp_path / "good.pth", {"state_dict": {KEY: weights()}, "meta": {"dataset_meta": {"classes": names}}})
    assert weight_norms([good], cats_file)["categories"][0]["id"] == 7
    shuffled = names[::-1]
    bad = save(tmp_path / "bad.pth", {"state_dict": {KEY: weights()}, "meta": {"dataset_meta": {"classes": shuffled}}})
    with pytest.raises(DataError, match="bad.pth: its classes .* label 0 is 'nine' there, 'two' here"):
        weight_norms([bad], cats_file, labels=["x"])


def _runner_checkpoint(path: Path) -> dict:
    """A checkpoint as mmengine's Runner.save_checkpoint writes it: meta, the message hub's
    state (HistoryBuffers of numpy arrays, numpy scalars), the state dict, the optimizer."""
    mmengine = pytest.importorskip("mmengine")
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint
    hub = MessageHub.get_instance("weight-norms-test")
    for step in range(3):
        hub.update_scalar("train/loss", np.float64(1.0 / (step + 1)))
    hub.update_info("iter", 3)
    hub.update_info("dataset_meta", {"classes": ("two", "three", "five", "seven", "nine")})
    hub.update_info("eta", np.float32(12.5))
    model = torch.nn.Linear(8, 5)
    with torch.no_grad():
        model.weight.copy_(weights())
    checkpoint = {"meta": {"epoch": 1, "iter": 3, "cfg": "model = dict()", "seed": 0,
                           "mmengine_version": mmengine.__version__, "time": "20240101_000000",
                           "dataset_meta": {"classes": ("two", "three", "five", "seven", "nine"),
                                            "palette": [(1, 2, 3)] * 5}},
                  "message_hub": hub.state_dict(),
                  "state_dict": {f"roi_head.bbox_head.fc_cls.{k}": v for k, v in model.state_dict().items()},
                  "optimizer": torch.optim.SGD(model.parameters(), lr=0.1).state_dict()}
    save_checkpoint(checkpoint, str(path))
    return checkpoint


def test_mmengine_runner_checkpoint_is_read_with_inert_stand_ins(tmp_path, cats_file):
    path = tmp_path / "epoch_12.pth"
    checkpoint = _runner_checkpoint(path)
    from mmengine.logging import HistoryBuffer
    assert isinstance(checkpoint["message_hub"]["log_scalars"]["train/loss"], HistoryBuffer)
    # torch's plain weights_only loader refuses it: the HistoryBuffer and numpy objects
    with pytest.raises(Exception, match="HistoryBuffer|numpy"):
        torch.load(path, weights_only=True)
    state, meta = load_checkpoint(path)
    torch.testing.assert_close(state[KEY], weights())
    assert meta["dataset_meta"]["classes"][0] == "two"
    # the whole file: the HistoryBuffer is an inert stand-in holding the numpy history
    from lt_bench.detection.analysis.weight_norms import _allowlist
    with torch.serialization.safe_globals(_allowlist()):
        whole = torch.load(path, weights_only=True)
    buffer = whole["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, Unread) and type(buffer) in STAND_INS
    assert buffer.pickled_as == "mmengine.logging.history_buffer.HistoryBuffer"
    np.testing.assert_allclose(buffer.state["_log_history"], [1.0, 0.5, 1 / 3])
    assert all(isinstance(m, Unread) for m in buffer.state["statistics_methods"].values())   # getattr: not run
    assert whole["message_hub"]["runtime_info"]["eta"] == np.float32(12.5)
    report = weight_norms([path], cats_file)
    assert [c["id"] for c in report["categories"]] == RANKED_IDS
    # and the loader imports no mmengine to do it (a fresh interpreter)
    code = ("import sys; from lt_bench.detection.analysis.weight_norms import load_checkpoint; "
            f"load_checkpoint({str(path)!r}); print(sorted(m for m in sys.modules if m.startswith('mmengine')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _touch(path):        # what the malicious pickle would call
    Path(path).write_text("ran")


class Malicious:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return _touch, (str(self.marker),)


class ShellOut:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload, offending", [(Malicious, "test_weight_norms._touch"), (ShellOut, "posix.system")])
def test_malicious_pickle_is_refused_without_running(tmp_path, cats_file, capsys, payload, offending, zip_format):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {KEY: weights()}, "meta": {"hook": payload(marker)}}, evil,
               _use_new_zipfile_serialization=zip_format)
    with pytest.raises(DataError, match=rf"evil.pth: refused, reading it would import \S*{offending}"):
        load_checkpoint(evil)
    status, _, err = run(capsys, evil, "--ann", cats_file, "--out", tmp_path / "n.png")
    assert status == 2 and err.startswith("DataError: ") and offending in err and "evil.pth" in err
    assert not marker.exists()
    assert not (tmp_path / "n.png").exists()


def test_unreadable_and_not_a_state_dict(tmp_path, cats_file):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="cannot read the checkpoint .*junk.pth"):
        load_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(DataError, match="checkpoint not found: .*missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    listy = save(tmp_path / "list.pth", [1, 2, 3])
    with pytest.raises(DataError, match="list.pth: neither a checkpoint with a 'state_dict' nor a state dict"):
        load_checkpoint(listy)


def test_outputs_are_not_overwritten(tmp_path, cats_file, capsys):
    ckpt = save(tmp_path / "a.pth", {KEY: weights()})
    out = tmp_path / "n.png"
    out.write_bytes(b"old")
    status, _, err = run(capsys, ckpt, "--ann", cats_file, "--out", out)
    assert status == 2 and err.strip() == f"ConfigError: {out} exists; --overwrite replaces it"
    assert out.read_bytes() == b"old"
    status, _, err = run(capsys, ckpt, "--ann", cats_file, "--out", out, "--overwrite")
    assert status == 0, err
    assert out.read_bytes()[:8] == PNG_MAGIC
    status, _, err = run(capsys, ckpt, "--ann", cats_file, "--out", tmp_path / "n.jpg")
    assert status == 2 and "name a .png file" in err
    status, _, err = run(capsys, ckpt, "--ann", cats_file, "--out", tmp_path / "x.png", "--json", cats_file)
    assert status == 2 and "is one of the input files" in err


def test_bad_categories_file(tmp_path):
    path = tmp_path / "cats.json"
    path.write_text(json.dumps([{"id": 1, "name": "a", "frequency": "x", "image_count": 3}]))
    with pytest.raises(DataError, match=r"cats.json: categories without .* \(ids \[1\]\)"):
        read_categories(path)
    path.write_text("{")
    with pytest.raises(DataError, match="cats.json: not an LVIS annotation file"):
        read_categories(path)


@needs_shared
def test_real_lvis_v1_categories(tmp_path):
    cats_path = SHARED_LVIS / "lvis_v1_categories_with_counts.json"
    cats = json.loads(cats_path.read_text())
    w = weights(rows=len(cats) + 1, dim=16)
    ckpt = save(tmp_path / "v1.pth", {"state_dict": {KEY: w}})
    report = weight_norms([ckpt], cats_path)
    counts = [c["image_count"] for c in report["categories"]]
    assert len(counts) == 1203 and counts == sorted(counts, reverse=True)
    by_id = {c["id"]: c for c in cats}
    first = report["categories"][0]
    assert first["image_count"] == max(c["image_count"] for c in cats)
    row = sorted(by_id).index(first["id"])
    assert first["norm"]["v1"] == pytest.approx(float(np.linalg.norm(w.double().numpy()[row])))
    assert report["checkpoints"][0]["background_row_dropped"] is True
    assert sum(c["frequency"] == "r" for c in report["categories"]) == 337


def write_example(folder: str | Path, categories: str | Path = SHARED_LVIS / "lvis_v1_categories_with_counts.json",
                  seed: int = 0) -> list[Path]:
    """Two synthetic checkpoints for the categories of ``categories`` (the docs picture,
    docs/det_weight_norms.png): A.pth's row norms grow with log(training images), as a Softmax
    detector's do, with a background row last; B.pth's are nearly flat, with C rows only."""
    cats = sorted(json.loads(Path(categories).read_text()), key=lambda c: c["id"])
    log_count = np.log1p([c["image_count"] for c in cats])
    rng = np.random.default_rng(seed)
    Path(folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for name, norms, background in (("A", 0.3 + 0.12 * log_count, 1), ("B", 0.9 + 0.01 * log_count, 0)):
        norms = norms * rng.lognormal(0, 0.12, len(norms))
        rows = rng.normal(size=(len(norms) + background, 64))
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        rows[:len(norms)] *= norms[:, None]
        paths.append(save(Path(folder) / f"{name}.pth", {"meta": {"note": "synthetic"}, "state_dict": {
            KEY: torch.tensor(rows, dtype=torch.float32)}}))
    return paths


@needs_shared
def test_docs_example(tmp_path, capsys):
    """The docs picture's inputs: A's group means fall from frequent to rare, B's stay level."""
    a, b = write_example(tmp_path)
    status, out, err = run(capsys, a, b, "--ann", SHARED_LVIS / "lvis_v1_categories_with_counts.json",
                           "--labels", "A", "B", "--out", tmp_path / "n.png", "--json", tmp_path / "n.json")
    assert status == 0, err
    means = json.loads((tmp_path / "n.json").read_text())["group_mean_norm"]
    assert means["A"]["f"] > means["A"]["c"] > means["A"]["r"]
    assert abs(means["B"]["f"] - means["B"]["r"]) < 0.1


def test_mmengines_local_checkpoint_loads_go_through_the_safe_loader(tmp_path):
    """lt_bench.detection.registry replaces mmengine's loader of local files (detection.load_from,
    a backbone's Pretrained file): an mmengine runner's checkpoint, which torch's default loader
    refuses, loads its weights; a malicious file is refused, naming it, and runs nothing."""
    import lt_bench.detection.registry  # noqa: F401
    from mmengine.runner.checkpoint import CheckpointLoader, load_checkpoint as mm_load
    path = tmp_path / "epoch_12.pth"
    checkpoint = _runner_checkpoint(path)
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location="cpu")
    assert set(loaded) == {"state_dict", "meta"}
    torch.testing.assert_close(loaded["state_dict"][KEY], weights())
    model = torch.nn.Module()
    model.roi_head = torch.nn.Module()
    model.roi_head.bbox_head = torch.nn.Module()
    model.roi_head.bbox_head.fc_cls = torch.nn.Linear(8, 5)
    mm_load(model, str(path), map_location="cpu", strict=True)     # what Runner.load_checkpoint calls
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, checkpoint["state_dict"][KEY])
    marker, evil = tmp_path / "marker", tmp_path / "evil.pth"
    torch.save({"state_dict": {KEY: weights()}, "meta": {"hook": ShellOut(marker)}}, evil)
    with pytest.raises(DataError, match=r"evil.pth: refused, reading it would import \S*posix.system"):
        CheckpointLoader.load_checkpoint(str(evil))
    assert not marker.exists()
