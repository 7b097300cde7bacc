"""Faults lose nothing and explain themselves: kills, SIGTERM, dying ranks, bad input."""
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lt_bench.checkpoint import load_checkpoint
from lt_bench.data import build_data
from lt_bench.data.split_file import SplitFileDataset, parse_split_file, read_split_file
from lt_bench.data.synthetic import write_cifar
from lt_bench.detection.annotations import annotation_problems, check_lvis_annotations
from lt_bench.errors import DataError, NonFiniteLossError
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
@pytest.mark.parametrize("failpoint,stage,epoch,step", [("stage1.step:2:5!term", "stage1", 2, 5),
                                                        ("stage2.step:1:3!term", "stage2", 1, 3)])
def test_sigterm_saves_mid_epoch_and_resume_is_exact(uninterrupted, tmp_path, failpoint, stage, epoch, step):
    stopped = run_py(f"out_dir={tmp_path}", *QUICK, cwd=tmp_path, failpoint=failpoint)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    output = stopped.stdout + stopped.stderr
    assert "SIGTERM, checkpoint saved at epoch" in output and "resume=true" in output
    assert "Traceback" not in output
    progress = load_checkpoint(tmp_path / "checkpoints" / f"{stage}.pt")["progress"]
    assert progress["in_epoch"]["epoch"] == epoch - 1 and progress["in_epoch"]["steps"] == step
    resumed = run_py(f"out_dir={tmp_path}", "resume=true", *QUICK, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert comparable(results(tmp_path)) == comparable(results(uninterrupted))
    assert final_weights_equal(tmp_path, uninterrupted)


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


# -- 3. numerical faults (the stop and the skip are in test_pipeline.py) --------------------

def test_gumbel_loss_finite_under_autocast_with_extreme_logits():
    from lt_bench.activations import build_activation
    layer = torch.nn.Linear(8, 5)
    with torch.no_grad():
        layer.weight.mul_(1e4)               # logits of order 1e4, of both signs
    x = torch.randn(16, 8, requires_grad=False)
    for dtype in (torch.bfloat16, torch.float16):
        layer.zero_grad()
        with torch.autocast("cpu", dtype=dtype):
            loss = build_activation("gumbel").loss(layer(x), torch.randint(0, 5, (16,)))
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in layer.parameters())


# -- 4. bad configuration: fails at start, before any data is read ---------------------------

# Through run.py, to see what the user sees (the in-process checks of every other name are in
# test_config.py, test_split_files.py, test_stage2_methods.py, test_pipeline.py).
@slow
@pytest.mark.parametrize("override,message", [
    ("task=cifar100t", "Could not find 'task/cifar100t'"),                      # Hydra: lists the options
    ("stage2.actvation=gumbel", "Could not override 'stage2.actvation'"),      # Hydra: unknown key
    ("stage2.activation=gumble", "unknown stage2.activation 'gumble'; valid: gumbel, sigmoid, softmax"),
])
def test_bad_configuration_fails_at_start_naming_the_value(tmp_path, override, message):
    proc = run_py(override, f"data.root={tmp_path / 'no_data'}", f"out_dir={tmp_path / 'run'}",
                  cwd=tmp_path, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and message in output, output[-2000:]
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "results.json").exists()


# -- 5. bad data ----------------------------------------------------------------------------

@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(b""), "not a readable CIFAR pickle"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "not a readable CIFAR pickle"),
    (lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8)})), "needs 'data' and 'labels'"),
    (lambda p: p.write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})),
     "must be N x 3072"),
])
def test_damaged_cifar_pickles_are_named(make_cfg, tmp_path, damage, message):
    write_cifar(tmp_path, "cifar10", train_per_class=3, test_per_class=1)
    victim = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    damage(victim)
    cfg = make_cfg("task=cifar10lt", f"data.root={tmp_path}", "data.verify_md5=false")
    with pytest.raises(DataError, match=rf"data_batch_3: .*{message}"):
        build_data(cfg)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
def test_non_rgb_images_load_as_rgb(tmp_path, mode):
    image = Image.new(mode, (9, 7))
    image.save(tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg")
    name = "x.png" if mode != "CMYK" else "x.jpg"
    (tmp_path / "split.txt").write_text(f"{name} 0\n")
    dataset = SplitFileDataset(tmp_path, tmp_path / "split.txt", read_split_file(tmp_path / "split.txt", 1))
    loaded, label = dataset[0]
    assert loaded.mode == "RGB" and loaded.size == (9, 7) and label == 0


def test_class_without_training_images_is_named(make_cfg, tmp_path):
    from lt_bench.data.synthetic import write_split_tree
    splits, images = write_split_tree(tmp_path, prefix="T", train_counts=[3, 0, 2])
    files = [f"task.split_files.{s}=T_{s}.txt" for s in ("train", "val", "test")]
    cfg = make_cfg("task=imagenetlt", "task.num_classes=3", *files, f"data.splits_dir={splits}", f"data.root={images}")
    with pytest.raises(DataError, match=r"T_train.txt: 1 class\(es\) without training images \(first: \[1\]\)"):
        build_data(cfg)


def test_lvis_annotation_with_missing_keys_is_named(tmp_path):
    good = {"images": [{"id": 1, "height": 4, "width": 4, "neg_category_ids": [], "not_exhaustive_category_ids": [],
                        "coco_url": "x/1.jpg"}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1], "area": 1.0,
                             "segmentation": [[0, 0, 1, 0, 1, 1]]}],
            "categories": [{"id": 3, "name": "cat", "frequency": "r"}]}
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(good))
    assert check_lvis_annotations(path) == good
    bad = json.loads(json.dumps(good))
    del bad["annotations"][0]["bbox"]
    del bad["images"][0]["neg_category_ids"]
    bad["categories"][0]["frequency"] = "x"
    bad["annotations"].append({"id": 8, "image_id": 2, "category_id": 3, "bbox": [0, 0, 1, 1], "area": 1.0,
                               "segmentation": []})
    path.write_text(json.dumps(bad))
    with pytest.raises(DataError) as err:
        check_lvis_annotations(path)
    text = str(err.value)
    assert str(path) in text and "4 problem(s)" in text
    for fragment in ("annotation id 7: missing 'bbox'", "image id 1: missing 'neg_category_ids'",
                     "category id 3: frequency 'x' is not one of r, c, f", "annotation id 8: unknown image_id 2"):
        assert fragment in text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=300) | st.binary(max_size=300).map(
    lambda b: b.decode("latin-1")))
def test_split_file_parser_never_crashes(tmp_path, text):
    path = tmp_path / "fuzz.txt"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass") if isinstance(text, str) else text)
    entries, problems = parse_split_file(path, num_classes=5)
    assert all(0 <= e.label < 5 and e.line >= 1 for e in entries)
    if problems:
        with pytest.raises(DataError):
            read_split_file(path, 5)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(
                        st.sampled_from(["id", "images", "annotations", "categories", "bbox", "image_id",
                                         "category_id", "frequency", "name", "height", "width"]), children,
                        max_size=6), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(data=JSON)
def test_lvis_annotation_checker_never_crashes(data):
    assert isinstance(annotation_problems(data), list)


# -- 6. records are never lost ----------------------------------------------------------------

def test_stage1_record_survives_a_failing_stage2(make_cfg, tmp_path):
    cfg = make_cfg("stage1.epochs=1", "stage2.epochs=1", "stage2.lr=1e30", "stage2.loss_scale=1e30",
                   "plots=false", out_dir=tmp_path)
    with pytest.raises(NonFiniteLossError, match="stage2: loss is"):
        run_training(cfg)
    assert [(r["stage"], r["method"]) for r in read_records(tmp_path / "results.json")] == [(1, "softmax")]
