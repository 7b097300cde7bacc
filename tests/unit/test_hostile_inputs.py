"""Bad input is named, and parsers never crash: damaged pickles, odd images, empty classes,
malformed LVIS files, fuzzed split files and annotation files, extreme logits."""
import json
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lt_bench.data import build_data
from lt_bench.data.split_file import SplitFileDataset, parse_split_file, read_split_file
from lt_bench.data.synthetic import write_cifar
from lt_bench.detection.annotations import annotation_problems, check_lvis_annotations
from lt_bench.errors import DataError


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


class _Payload:
    """A pickle that runs code when loaded (what a plain pickle.load would execute)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("verify_md5,message", [(True, "md5 differs from the official file's"),
                                                (False, "refused global (posix|os|nt).system")])
def test_a_cifar_pickle_never_runs_code(make_cfg, tmp_path, verify_md5, message):
    """Issue 15.1: checksums first, then a reader that refuses anything but data."""
    write_cifar(tmp_path, "cifar10", train_per_class=3, test_per_class=1)
    marker = tmp_path / "pwned"
    victim = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    victim.write_bytes(pickle.dumps({"data": _Payload(marker), "labels": [0]}, protocol=2))
    cfg = make_cfg("task=cifar10lt", f"data.root={tmp_path}", f"data.verify_md5={str(verify_md5).lower()}")
    with pytest.raises(DataError, match=rf"data_batch_1: .*{message}"):
        build_data(cfg)
    assert not marker.exists()


def test_cifar_reader_equals_torchvisions(tmp_path):
    """The restricted reader gives torchvision's CIFAR images and labels, item for item."""
    from torchvision import datasets

    from lt_bench.data.cifar import load_cifar_pickles
    write_cifar(tmp_path, "cifar100", train_per_class=2, test_per_class=1)

    class Unchecked(datasets.CIFAR100):          # torchvision's own reader, checksums off
        train_list = [[n, None] for n, _ in datasets.CIFAR100.train_list]
        test_list = [[n, None] for n, _ in datasets.CIFAR100.test_list]
        meta = {**datasets.CIFAR100.meta, "md5": None}

    train, test, classes = load_cifar_pickles("cifar100", tmp_path, download=False, verify_md5=False)
    for ours, split in ((train, True), (test, False)):
        theirs = Unchecked(str(tmp_path), train=split)
        assert ours.targets == list(theirs.targets) and classes == theirs.classes
        for i in (0, len(ours) // 2, len(ours) - 1):
            assert np.array_equal(np.asarray(ours[i][0]), np.asarray(theirs[i][0])) and ours[i][1] == theirs[i][1]


@pytest.mark.parametrize("labels,message", [([0, 0, 99], r"labels \[99\] outside the 10 classes"),
                                            ([0, 0, -1], r"labels \[-1\] outside"),
                                            ([0, 0, 1.5], "labels must be a list of integers")])
def test_cifar_labels_outside_the_classes_are_named(make_cfg, tmp_path, labels, message):
    write_cifar(tmp_path, "cifar10", train_per_class=3, test_per_class=1)
    test_batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(pickle.dumps({"data": np.zeros((3, 3072), np.uint8), "labels": labels}, protocol=2))
    with pytest.raises(DataError, match=message):
        build_data(make_cfg("task=cifar10lt", f"data.root={tmp_path}", "data.verify_md5=false"))


def test_non_uint8_cifar_pixels_are_named(make_cfg, tmp_path):
    write_cifar(tmp_path, "cifar10", train_per_class=3, test_per_class=1)
    test_batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    test_batch.write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.float64), "labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match="test_batch: 'data' must hold uint8 pixels, found float64"):
        build_data(make_cfg("task=cifar10lt", f"data.root={tmp_path}", "data.verify_md5=false"))


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


# -- the campaign's run-level cases: each a named error before anything is trained -----------

@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory):
    """Files a careless user passes: checkpoints of the wrong kind, weights that are not a state
    dict, a generated CIFAR-100 folder, image-folder trees with an empty class and a bad image."""
    from lt_bench.models import build_model
    root = tmp_path_factory.mktemp("hostile")
    state = build_model("resnet8", 10, in_chans=1).state_dict()
    meta = {"num_classes": 10, "model_name": "resnet8", "task": "digits_lt", "progress": {"complete": True}}
    incomplete = dict(state)
    incomplete.pop("backbone.bn1.running_mean")
    reshaped = {**state, "classifier.weight": torch.zeros(10, 3)}
    files = {"stage2": {**meta, "stage": "stage2", "model": state}, "plain": state,
             "tensor": torch.zeros(3), "list": [1, 2, 3],
             "incomplete": {**meta, "stage": "stage1", "model": incomplete},
             "reshaped": {**meta, "stage": "stage1", "model": reshaped}}
    paths = {}
    for name, obj in files.items():
        paths[name] = root / f"{name}.pt"
        torch.save(obj, paths[name])
    paths["cifar"] = write_cifar(root / "cifar", "cifar100", train_per_class=3, test_per_class=1)
    for tree in ("empty_class", "bad_image"):
        for split, per_class in (("train", 3), ("test", 1)):
            for c in range(10):
                folder = root / tree / split / f"c{c}"
                folder.mkdir(parents=True)
                if tree == "empty_class" and split == "train" and c == 4:
                    continue
                for i in range(per_class):
                    Image.new("RGB", (32, 32), (20 * c, 30 * i, 0)).save(folder / f"{i}.png")
    (root / "bad_image" / "train" / "c0" / "0.png").write_bytes(b"not an image")
    (root / "afile").write_text("")
    paths.update(tree=root, afile=root / "afile")
    return paths


TINY_FOLDER = ["task=cifar10lt", "imbalance=3", "data.format=imagefolder", "stage1.epochs=1", "stage2.epochs=1",
               "stage1.batch_size=8", "stage2.batch_size=8", "data.num_workers=0", "plots=false"]

# (case, overrides with {file} placeholders, error type name, message fragment)
RUN_CASES = [
    ("zero-image class, digits", ["imbalance=200"], "DataError",
     "imbalance=200 leaves 1 class(es) without training images (the rarest keeps int(120 / 200) = 0"),
    ("zero-image class, CIFAR", ["task=cifar100lt", "imbalance=4", "data.root={cifar}", "data.verify_md5=false"],
     # 3 * 0.25 ** (i / 99) < 1 for i > 99 * ln 3 / ln 4 = 78.5: classes 79..99
     "DataError", "imbalance=4 leaves 21 class(es) without training images"),
    ("stage-2 checkpoint as stage1.checkpoint", ["stage=2", "stage1.checkpoint={stage2}"], "CheckpointError",
     "stage2.pt is a stage2 checkpoint, not a stage-1 one"),
    ("plain state dict as stage1.checkpoint", ["stage=2", "stage1.checkpoint={plain}"], "CheckpointError",
     "plain.pt is a plain state dict (weights without lt_bench's metadata)"),
    ("tensor file as stage1.checkpoint", ["stage=2", "stage1.checkpoint={tensor}"], "CheckpointError",
     "tensor.pt is a Tensor without a 'model' entry"),
    ("list file as stage1.checkpoint", ["stage=2", "stage1.checkpoint={list}"], "CheckpointError",
     "list.pt is a list without a 'model' entry"),
    ("incomplete model state", ["stage=2", "stage1.checkpoint={incomplete}"], "CheckpointError",
     "its model weights do not fit resnet8: 1 missing (first: backbone.bn1.running_mean)"),
    ("wrongly shaped model state", ["stage=2", "stage1.checkpoint={reshaped}"], "CheckpointError",
     "1 wrong (first: classifier.weight (10, 3) (model: (10, 64)))"),
    ("tensor file as model.pretrained", ["model.pretrained={tensor}"], "CheckpointError",
     "tensor.pt holds a Tensor, not a state dict"),
    ("list file as model.pretrained", ["model.pretrained={list}"], "CheckpointError",
     "list.pt holds a list, not a state dict"),
    ("number as model.pretrained", ["model.pretrained=3"], "ConfigError", "model.pretrained must be a path"),
    ("seed=-1", ["seed=-1"], "ConfigError", "seed must be an integer >= 0, got -1"),
    ("data.num_workers=-1", ["data.num_workers=-1"], "ConfigError", "data.num_workers must be an integer >= 0"),
    ("out_dir below a file", ["out_dir={afile}/run"], "ConfigError", "is a file, not a folder: "),
    ("out_dir is a file", ["out_dir={afile}"], "ConfigError", "afile is a file, not a folder"),
    ("image folder with an empty class folder", [*TINY_FOLDER, "data.root={tree}/empty_class"], "DataError",
     "empty_class/train: Found no valid file for the classes c4"),
    ("image folder with a corrupt image", [*TINY_FOLDER, "data.root={tree}/bad_image"], "DataError",
     "cannot read image {tree}/bad_image/train/c0/0.png: cannot identify image file"),
]


@pytest.mark.parametrize("case,overrides,error,message", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_careless_runs_are_named_errors(make_cfg, tmp_path, hostile_files, case, overrides, error, message):
    """Each input gives the named error (the class the CLI prints in one line, exit 2), never a
    traceback, and no stage trains: the folder gets no checkpoint."""
    from lt_bench.cli import dispatch
    from lt_bench.errors import LtBenchError
    filled = [o.format(**hostile_files) for o in overrides]
    cfg = make_cfg("device=cpu", "stage1.epochs=1", "stage2.epochs=1", *filled)
    with pytest.raises(LtBenchError) as err:
        dispatch(cfg)
    assert type(err.value).__name__ == error and message.format(**hostile_files) in str(err.value), str(err.value)
    assert not list(tmp_path.rglob("*.pt"))


def test_a_list_as_stage1_checkpoint_is_refused_when_composed(make_cfg):
    """The structured config types stage1.checkpoint as a string: Hydra names the override."""
    from hydra.errors import ConfigCompositionException
    with pytest.raises(ConfigCompositionException, match=r"Error merging override stage1.checkpoint=\[1,2\]"):
        make_cfg("stage=2", "stage1.checkpoint=[1,2]")


def test_a_read_only_out_dir_is_named_before_anything_is_written(make_cfg, tmp_path, monkeypatch):
    """(root may write anywhere, so the permission is simulated.)"""
    import os

    from lt_bench.errors import ConfigError
    from lt_bench.run_folder import accept_run_folder
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(locked) else real_access(p, mode))
    for out in (locked, locked / "run"):
        with pytest.raises(ConfigError, match="is not writable"):
            accept_run_folder(make_cfg(out_dir=out), out)
    assert not list(locked.iterdir())


def test_a_worker_error_is_shown_without_the_worker_traceback():
    from torch.utils.data._utils import ExceptionWrapper

    from lt_bench.errors import error_text
    try:
        raise DataError("cannot read image /data/x.png: truncated")
    except DataError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(DataError) as err:
        wrapped.reraise()
    assert "Traceback" in str(err.value)
    assert error_text(err.value) == "cannot read image /data/x.png: truncated (in a DataLoader worker)"
