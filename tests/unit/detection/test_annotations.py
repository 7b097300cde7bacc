"""The LVIS annotation checker: every wrong type or unreadable file is a named problem or a
DataError naming the path, never a traceback (missing keys: tests/unit/test_hostile_inputs.py)."""
import copy
import json
import re

import pytest

from lt_bench.detection.annotations import annotation_problems, check_lvis_annotations
from lt_bench.errors import DataError

from tests.conftest import ROOT

SHARED_LVIS = ROOT.parent / "shared" / "data" / "lvis"

GOOD = {"images": [{"id": 1, "height": 4, "width": 4, "neg_category_ids": [3], "not_exhaustive_category_ids": [],
                    "coco_url": "x/1.jpg"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0.5, 1, 1], "area": 1.0,
                         "segmentation": [[0, 0, 1, 0, 1, 1.5]]}],
        "categories": [{"id": 3, "name": "cat", "frequency": "r"}]}


def mutated(section, key, value):
    data = copy.deepcopy(GOOD)
    if section is None:
        data[key] = value
    else:
        data[section][0][key] = value
    return data


INF, NAN = float("inf"), float("nan")
ROWS = [
    # ids: integers, never bools, strings or floats
    ("annotations", "id", "7", "annotation #0: id must be an integer, got '7'"),
    ("annotations", "id", True, "annotation #0: id must be an integer, got True"),
    ("annotations", "id", 7.0, "annotation #0: id must be an integer, got 7.0"),
    ("annotations", "id", [7], "annotation #0: id must be an integer, got [7]"),
    ("annotations", "image_id", "1", "annotation id 7: image_id must be an integer, got '1'"),
    ("annotations", "image_id", True, "annotation id 7: image_id must be an integer, got True"),
    ("annotations", "category_id", 3.0, "annotation id 7: category_id must be an integer, got 3.0"),
    ("annotations", "category_id", None, "annotation id 7: category_id must be an integer, got None"),
    ("images", "id", {"a": 1}, "image #0: id must be an integer, got {'a': 1}"),
    ("categories", "id", False, "category #0: id must be an integer, got False"),
    # bbox: 4 finite numbers, width and height >= 0
    ("annotations", "bbox", [0, 0, 1], "annotation id 7: bbox must be 4 finite numbers [x, y, width, height] "
                                       "with width, height >= 0, got [0, 0, 1]"),
    ("annotations", "bbox", [0, 0, 1, 1, 1], "bbox must be 4 finite numbers"),
    ("annotations", "bbox", [0, 0, -1, 1], "bbox must be 4 finite numbers"),
    ("annotations", "bbox", [0, 0, 1, -0.5], "bbox must be 4 finite numbers"),
    ("annotations", "bbox", [0, 0, INF, 1], "got [0, 0, inf, 1]"),
    ("annotations", "bbox", [NAN, 0, 1, 1], "got [nan, 0, 1, 1]"),
    ("annotations", "bbox", [True, 0, 1, 1], "got [True, 0, 1, 1]"),
    ("annotations", "bbox", ["0", 0, 1, 1], "bbox must be 4 finite numbers"),
    ("annotations", "bbox", {"x": 0}, "bbox must be 4 finite numbers"),
    ("annotations", "bbox", None, "bbox must be 4 finite numbers"),
    # area: finite number >= 0
    ("annotations", "area", -1, "annotation id 7: area must be a finite number >= 0, got -1"),
    ("annotations", "area", INF, "area must be a finite number >= 0, got inf"),
    ("annotations", "area", NAN, "area must be a finite number >= 0, got nan"),
    ("annotations", "area", "1.0", "area must be a finite number >= 0, got '1.0'"),
    ("annotations", "area", True, "area must be a finite number >= 0, got True"),
    # segmentation: polygons (list of lists of numbers) or RLE {counts, size}
    ("annotations", "segmentation", "polygon", "annotation id 7: segmentation must be a list of polygons "
                                               "or an RLE object, got 'polygon'"),
    ("annotations", "segmentation", 3, "segmentation must be a list of polygons or an RLE object"),
    ("annotations", "segmentation", [0, 0, 1, 0, 1, 1], "segmentation polygons must be lists of finite numbers"),
    ("annotations", "segmentation", [[0, "0", 1]], "segmentation polygons must be lists of finite numbers"),
    ("annotations", "segmentation", [[0, NAN, 1]], "segmentation polygons must be lists of finite numbers"),
    ("annotations", "segmentation", {"counts": "abc"}, "segmentation RLE must have 'counts'"),
    ("annotations", "segmentation", {"size": [4, 4]}, "segmentation RLE must have 'counts'"),
    ("annotations", "segmentation", {"counts": 5, "size": [4, 4]}, "segmentation RLE must have 'counts'"),
    ("annotations", "segmentation", {"counts": "abc", "size": [4]}, "segmentation RLE must have 'counts'"),
    ("annotations", "segmentation", {"counts": [1, 2], "size": [4, "4"]}, "segmentation RLE must have 'counts'"),
    # images: positive integer sizes, lists of category ids
    ("images", "height", 0, "image id 1: height must be a positive integer, got 0"),
    ("images", "width", -4, "image id 1: width must be a positive integer, got -4"),
    ("images", "width", 4.0, "image id 1: width must be a positive integer, got 4.0"),
    ("images", "height", "480", "image id 1: height must be a positive integer, got '480'"),
    ("images", "height", True, "image id 1: height must be a positive integer, got True"),
    ("images", "neg_category_ids", 3, "image id 1: neg_category_ids must be a list of integer category ids, got 3"),
    ("images", "neg_category_ids", {"3": 1}, "neg_category_ids must be a list of integer category ids"),
    ("images", "not_exhaustive_category_ids", ["3"], "image id 1: not_exhaustive_category_ids must be a list of "
                                                     "integer category ids, got ['3']"),
    ("images", "not_exhaustive_category_ids", [True], "not_exhaustive_category_ids must be a list of integer"),
    ("images", "coco_url", 5, "image id 1: coco_url must be a string, got 5"),
    # categories
    ("categories", "frequency", "rare", "category id 3: frequency 'rare' is not one of r, c, f"),
    ("categories", "frequency", ["r"], "category id 3: frequency ['r'] is not one of r, c, f"),
    ("categories", "name", None, "category id 3: name must be a string, got None"),
    # the top level: lists of objects
    (None, "images", {"id": 1}, "'images' is an object, expected a list of objects"),
    (None, "annotations", "[]", "'annotations' is a string, expected a list of objects"),
    (None, "categories", 3, "'categories' is a number, expected a list of objects"),
    (None, "categories", None, "'categories' is null, expected a list of objects"),
    (None, "images", [1], "image #0 is not an object"),
    (None, "annotations", [[]], "annotation #0 is not an object"),
]


def test_the_valid_annotations_have_no_problem():
    assert annotation_problems(GOOD) == []
    for segmentation in ([], [[]], {"counts": "abc", "size": [4, 4]}, {"counts": [0, 16], "size": [4, 4]}):
        assert annotation_problems(mutated("annotations", "segmentation", segmentation)) == []
    assert annotation_problems(mutated("annotations", "bbox", [-1, -2.5, 0, 0])) == []   # x, y: any finite
    assert annotation_problems(mutated("annotations", "area", 0)) == []


@pytest.mark.parametrize("section,key,value,fragment", ROWS, ids=[f"{r[0]}.{r[1]}={r[2]!r}" for r in ROWS])
def test_wrong_types_are_named(section, key, value, fragment):
    problems = annotation_problems(mutated(section, key, value))
    assert any(fragment in p for p in problems), problems


def test_a_wrong_type_is_one_problem_and_names_the_file(tmp_path):
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(mutated("annotations", "bbox", [0, 0, "1", 1])))
    with pytest.raises(DataError) as err:
        check_lvis_annotations(path)
    assert str(err.value) == (f"{path}: 1 problem(s) in the LVIS annotations:\n  annotation id 7: bbox must be "
                              "4 finite numbers [x, y, width, height] with width, height >= 0, got [0, 0, '1', 1]")


def test_a_wrongly_typed_id_is_no_cross_reference_crash():
    data = copy.deepcopy(GOOD)
    data["annotations"][0]["image_id"] = [1]          # unhashable: was a TypeError path
    data["annotations"][0]["category_id"] = 4          # an integer that no category has
    assert annotation_problems(data) == ["annotation id 7: image_id must be an integer, got [1]",
                                         "annotation id 7: unknown category_id 4"]


def test_huge_and_deep_values_give_short_messages():
    deep = []
    for _ in range(5000):
        deep = [deep]
    for value in (deep, 10 ** 5000, "x" * 100_000, list(range(100_000))):
        problems = annotation_problems(mutated("annotations", "bbox", value))
        assert len(problems) == 1 and len(problems[0]) < 300, problems
    problems = annotation_problems(mutated("annotations", "id", 10 ** 5000))
    assert problems == []   # an integer id, however large
    assert annotation_problems(mutated("annotations", "category_id", 10 ** 5000)) == [
        "annotation id 7: unknown category_id <integer of 16610 bits>"]


@pytest.mark.parametrize("content,message", [
    ('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply to be an LVIS annotation file"),
    (b'{"images": [], "note": "caf\xe9"}', r"not UTF-8 text \(byte b'\\xe9' at offset 27\)"),
    ("\x00\x01", "not a readable JSON file"),
    ("", "not a readable JSON file"),
    ('{"images": ' + "1" * 5000 + "}", "not a readable JSON file"),   # int() digit limit: a ValueError
])
def test_unreadable_files_are_a_data_error_naming_the_path(tmp_path, content, message):
    path = tmp_path / "lvis.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        check_lvis_annotations(path)
    assert str(path) in str(err.value)


def test_a_folder_or_missing_file_is_a_data_error_naming_the_path(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}: is a folder, expected an LVIS annotation JSON file")):
        check_lvis_annotations(tmp_path)
    with pytest.raises(DataError, match=re.escape(f"LVIS annotation file not found: {tmp_path / 'no.json'}")):
        check_lvis_annotations(tmp_path / "no.json")


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(GOOD), encoding="utf-8-sig")
    assert check_lvis_annotations(path) == GOOD


@pytest.mark.skipif(not (SHARED_LVIS / "lvis_v0.5_val_100.json").is_file(), reason="../shared/data/lvis not present")
def test_the_real_lvis_annotations_have_no_problem():
    data = check_lvis_annotations(SHARED_LVIS / "lvis_v0.5_val_100.json")
    assert (len(data["images"]), len(data["annotations"]), len(data["categories"])) == (100, 977, 1230)
