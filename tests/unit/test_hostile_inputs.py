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
