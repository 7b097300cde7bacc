"""The results-file reader against json.load: the same columns whatever the JSON's layout (key
order, whitespace, extra keys, exponents, escapes, integer scores, an empty array), the masks
kept compact but given back as the file had them, and a DataError naming the file and the
detection (or byte) for each malformed or wrongly typed file."""
from __future__ import annotations

import json
import mmap
import os
import re

import numpy as np
import pytest

pytest.importorskip("msgspec", reason="the detection extra is not installed (make det)")
from pycocotools import mask as mask_utils  # noqa: E402

from lt_bench.detection.results_file import MaskColumn, parse_results, read_results  # noqa: E402
from lt_bench.errors import DataError  # noqa: E402
from tests.conftest import ROOT  # noqa: E402


def detections(n: int, seed: int, boxes: bool = True, masks: bool = True) -> list[dict]:
    """Random detections; masks are real compressed RLEs (their counts use the characters
    48..111, backslash among them)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
        bw, bh = rng.uniform(1, w - x), rng.uniform(1, h - y)
        d = {"image_id": int(rng.integers(1, 10 ** 6)), "category_id": int(rng.integers(1, 1204)),
             "score": float(rng.random()) if rng.random() < 0.8 else int(rng.integers(0, 2))}
        if boxes:
            d["bbox"] = [float(v) for v in (x, y, bw, bh)]
        if masks:
            k = int(rng.integers(3, 12))
            t = np.sort(rng.uniform(0, 2 * np.pi, k))
            poly = np.stack([x + bw / 2 * (1 + np.cos(t)), y + bh / 2 * (1 + np.sin(t))], 1).ravel().tolist()
            rle = mask_utils.frPyObjects([poly], h, w)[0]
            d["segmentation"] = {"size": [h, w], "counts": rle["counts"].decode()}
        out.append(d)
    return out


def assert_columns_equal(columns: dict, reference: list[dict]) -> None:
    """The reader's columns hold exactly what json.load gives."""
    n = len(reference)
    assert len(columns["score"]) == n
    np.testing.assert_array_equal(columns["image_id"], np.array([d["image_id"] for d in reference], np.int64))
    np.testing.assert_array_equal(columns["category_id"], np.array([d["category_id"] for d in reference], np.int64))
    assert columns["score"].tolist() == [float(d["score"]) for d in reference]
    if n and "bbox" in reference[0]:
        assert columns["bbox"].tolist() == [[float(v) for v in d["bbox"]] for d in reference]
    else:
        assert columns["bbox"] is None
    masks = columns["segmentation"]
    if any("segmentation" in d for d in reference):
        assert isinstance(masks, MaskColumn) and len(masks) == n
        expected = [_as_read(d.get("segmentation")) for d in reference]
        assert [masks[i] for i in range(n)] == expected
        assert masks.take(np.arange(n)[::-1]) == expected[::-1]
        assert masks.take([-1, 0]) == [expected[-1], expected[0]] and masks.take([]) == []
        assert list(masks) == expected
    else:
        assert masks is None


def _as_read(segm):
    """A mask as the column gives it back: compressed counts as bytes, anything else as is."""
    if isinstance(segm, dict) and isinstance(segm["counts"], str):
        return {"size": segm["size"], "counts": segm["counts"].encode()}
    return segm


def write(tmp_path, text: str | bytes, name: str = "dt.json"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def read_both(path, **kwargs):
    return read_results(path, **kwargs), json.loads(path.read_bytes())


# ---- the same columns as json.load ------------------------------------------------------------
def test_the_counts_have_escapes():
    """The generated masks exercise the JSON escape of '\\' (counts hold it as a character)."""
    text = json.dumps(detections(200, 0))
    assert "\\\\" in text


@pytest.mark.parametrize("indent", [None, 2, "\t"])
def test_plain_and_indented(tmp_path, indent):
    reference = detections(300, 1)
    columns, loaded = read_both(write(tmp_path, json.dumps(reference, indent=indent)))
    assert loaded == reference
    assert_columns_equal(columns, reference)


def test_shuffled_keys_extra_keys_and_odd_whitespace(tmp_path):
    rng = np.random.default_rng(2)
    reference = detections(400, 2)
    parts = []
    for d in reference:
        d = dict(d)
        d["extra"] = {"score": "not this one", "bbox": [1, 2], "image_id": None, "s": "é \" \\ \u2603"}
        d["list"] = [{"category_id": 5}, [], "x"]
        items = list(d.items())
        rng.shuffle(items)
        sep = ["", " ", "\n", "\t", "\r\n  "][int(rng.integers(5))]
        parts.append("{" + sep + ("," + sep).join(f"{json.dumps(k)}{sep}:{sep}{json.dumps(v)}" for k, v in items) + sep + "}")
    text = " \n[\n" + " ,\n\t".join(parts) + "\n]\n "
    columns, loaded = read_both(write(tmp_path, text))
    assert_columns_equal(columns, loaded)
    assert columns["score"].tolist() == [float(d["score"]) for d in reference]


def test_exponent_and_integer_numbers(tmp_path):
    reference = detections(300, 3, masks=False)
    formats = ["{:.17e}", "{:.17E}", "{!r}", "{:.6g}", "{:.0f}"]
    parts = []
    for i, d in enumerate(reference):
        f = formats[i % len(formats)]
        box = ", ".join(f.format(v) for v in d["bbox"])
        score = f.format(float(d["score"])) if i % 7 else str(int(d["score"] > 0.5))     # some integer scores
        parts.append(f'{{"image_id": {d["image_id"]}, "category_id": {d["category_id"]}, '
                     f'"bbox": [{box}], "score": {score}}}')
    text = "[" + ",".join(parts) + "]"
    assert re.search(r"\d[eE][-+]\d", text) and re.search(r'"score": [01][,}]', text)
    columns, loaded = read_both(write(tmp_path, text))
    assert_columns_equal(columns, loaded)


def test_escaped_characters_in_counts(tmp_path):
    """\\\\, \\/ and \\u escapes in a counts string are JSON's, decoded as json decodes them."""
    text = ('[{"image_id": 1, "category_id": 2, "score": 0.5, "segmentation": '
            '{"size": [4, 4], "counts": "0\\\\1\\/2\\u00413"}},'
            ' {"image_id": 1, "category_id": 2, "score": 0.25, "segmentation": {"counts": "\\\\\\\\", "size": [1, 2]}}]')
    columns, loaded = read_both(write(tmp_path, text))
    assert loaded[0]["segmentation"]["counts"] == "0\\1/2A3"
    assert_columns_equal(columns, loaded)
    assert columns["segmentation"][1]["counts"] == b"\\\\"


def test_polygons_uncompressed_rle_and_missing_masks_as_the_file_has_them(tmp_path):
    reference = detections(50, 4)
    reference[3]["segmentation"] = [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]
    reference[7]["segmentation"] = {"size": [3, 2], "counts": [1, 4, 1]}
    del reference[9]["segmentation"]
    columns, loaded = read_both(write(tmp_path, json.dumps(reference)))
    assert_columns_equal(columns, loaded)
    masks = columns["segmentation"]
    assert masks[9] is None and None in masks and masks.index(None) == 9
    assert masks[-1] == masks[49]
    with pytest.raises(IndexError):
        masks[50]


def test_batches_join_up(tmp_path):
    """Decoded a few at a time (batch=7), the columns are the same, and so are the errors' indices."""
    reference = detections(100, 5)
    path = write(tmp_path, json.dumps(reference))
    assert_columns_equal(read_results(path, batch=7), reference)
    reference[45]["score"] = "high"
    with pytest.raises(DataError, match=r"detection #45, score: Expected `float`, got `str`"):
        read_results(write(tmp_path, json.dumps(reference)), batch=7)


@pytest.mark.parametrize("masks", ["read", "skip"])
def test_forked_readers_give_the_same_columns_and_the_first_error(tmp_path, masks):
    """workers=3 (runs of batches decoded in forked processes, joined in file order): the same
    columns as one process, polygons and missing masks at their global indices, and the first
    problem in file order named by its index in the whole file."""
    reference = detections(100, 8)
    reference[12]["segmentation"] = [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]
    del reference[71]["segmentation"]
    path = write(tmp_path, json.dumps(reference))
    one, three = read_results(path, masks=masks, batch=7), read_results(path, masks=masks, batch=7, workers=3)
    assert_columns_equal(three, reference if masks == "read" else
                         [{k: v for k, v in d.items() if k != "segmentation"} for d in reference])
    assert three["masks_in_file"] is one["masks_in_file"] is True
    reference[52]["score"] = "high"        # in the second worker's run
    reference[90]["score"] = "low"         # and in the third's: the first is reported
    with pytest.raises(DataError, match=r"detection #52, score: Expected `float`, got `str`"):
        read_results(write(tmp_path, json.dumps(reference)), batch=7, workers=3)
    reference[52]["score"], reference[90]["score"] = 0.5, 0.5
    for d in reference[50:]:
        del d["bbox"]                      # a run without boxes after runs with them
    with pytest.raises(DataError, match=r"detection #50 has no 'bbox' but detection #0 has"):   # as one process
        read_results(write(tmp_path, json.dumps(reference)), batch=7, workers=3)
    for d in reference[50:70]:
        d["bbox"] = [1.0, 2.0, 3.0, 4.0]   # now the third run (from #70) is the first without boxes
    with pytest.raises(DataError, match=r"detection #70 has no 'bbox' but detection #0 has"):
        read_results(write(tmp_path, json.dumps(reference)), batch=7, workers=3)


@pytest.mark.parametrize("text", ["[]", " [ \n ] \n"])
def test_an_empty_array(tmp_path, text):
    columns = read_results(write(tmp_path, text))
    assert len(columns["score"]) == 0 and columns["image_id"].dtype == np.int64
    assert columns["bbox"] is None and columns["segmentation"] is None


def test_masks_read_skipped_or_as_the_first_detection_says(tmp_path):
    both = write(tmp_path, json.dumps(detections(20, 6)), "both.json")
    masks_only = write(tmp_path, json.dumps(detections(20, 6, boxes=False)), "masks.json")
    boxes_only = write(tmp_path, json.dumps(detections(20, 6, masks=False)), "boxes.json")
    skipped = read_results(both, masks="skip")
    assert skipped["segmentation"] is None and skipped["masks_in_file"] and skipped["bbox"] is not None
    assert read_results(both, masks="auto")["segmentation"] is not None
    assert read_results(masks_only, masks="skip")["segmentation"] is not None      # the boxes need them
    auto = read_results(boxes_only, masks="auto")
    assert auto["segmentation"] is None and not auto["masks_in_file"]
    assert read_results(boxes_only, masks="read")["segmentation"] is None


def test_non_ascii_text_elsewhere_is_fine(tmp_path):
    reference = detections(10, 7)
    reference[4]["note"] = "päivää ☃"
    columns, loaded = read_both(write(tmp_path, json.dumps(reference, ensure_ascii=False)))
    assert_columns_equal(columns, loaded)


# ---- errors: DataError naming the file and the detection or byte ------------------------------
GOOD = '{"image_id": 1, "category_id": 2, "score": 0.5, "bbox": [1, 2, 3, 4]}'
TRUNCATED = f"[{GOOD}, {GOOD[:30]}"
DOUBLE_COMMA = f"[{GOOD},, {GOOD}]"
TRAILING = f"[{GOOD}] ["
NAN = f'[{GOOD.replace("0.5", "NaN")}]'


@pytest.mark.parametrize("text,message", [
    ('{"image_id": 1}', r"not a JSON array of detections \(Expected `array`, got `object`\)"),
    ("", r"empty, not a JSON array"),
    (TRUNCATED, rf"not valid JSON: truncated: it ends inside a value \(at byte {len(TRUNCATED)}\)"),
    (DOUBLE_COMMA, rf"not valid JSON: JSON is malformed: invalid character \(byte {DOUBLE_COMMA.index(',,') + 1}\)"),
    (TRAILING, r"not valid JSON: JSON is malformed: trailing characters \(byte \d+\)"),
    (f'[{GOOD}, {{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4]}}]',
     r"detection #1: Object missing required field `score`"),
    (f'[{GOOD}, {GOOD}, {GOOD.replace("[1, 2, 3, 4]", "[1, 2, 3]")}]', r"detection #2, bbox: Expected `array` of length 4"),
    (f'[{GOOD.replace("[1, 2, 3, 4]", "[1, 2, 3, 4, 5]")}]', r"detection #0, bbox: Expected `array` of length 4"),
    (f'[{GOOD.replace("[1, 2, 3, 4]", "[1, 2, null, 4]")}]', r"detection #0, bbox\[2\]: Expected `float`, got `null`"),
    (f'[{GOOD.replace("[1, 2, 3, 4]", "null")}]', r"detection #0, bbox: Expected `array`, got `null`"),
    (f'[{GOOD}, {GOOD.replace("0.5", chr(34) + "0.5" + chr(34))}]', r"detection #1, score: Expected `float`, got `str`"),
    (f'[{GOOD.replace("0.5", "true")}]', r"detection #0, score: Expected `float`, got `bool`"),
    (NAN, rf"not valid JSON: JSON is malformed: invalid character \(byte {NAN.index('NaN')}\)"),
    (f'[{GOOD.replace("0.5", "1e400")}]', r"detection #0, score: Number out of range"),
    (f'[{GOOD.replace(": 1,", ": 1.5,", 1)}]', r"detection #0, image_id: Expected `int`, got `float`"),
    (f'[{GOOD.replace(": 1,", ": 9223372036854775808,", 1)}]', r"detection #0: image_id 9223372036854775808 is out of range"),
    (f'[{GOOD}, 7]', r"detection #1: Expected `object`, got `int`"),
    (f'[{GOOD}, {GOOD}, {{"image_id": 1, "category_id": 2, "score": 0.5}}]',
     r"detection #2 has no 'bbox' but detection #0 has"),
    ('[{"image_id": 1, "category_id": 2, "score": 0.5}, ' + GOOD + "]", r"detection #0 has no 'bbox' but detection #1 has"),
    ('[{"image_id": 1, "category_id": 2, "score": 0.5, "segmentation": {"size": [4], "counts": "ab"}}]',
     r"detection #0, segmentation.size: Expected `array` of length 2"),
    ('[{"image_id": 1, "category_id": 2, "score": 0.5, "segmentation": "ab"}]',
     r"detection #0, segmentation: Expected `object \| array`, got `str`"),
])
def test_malformed_files_are_data_errors_naming_file_and_place(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError, match=re.escape(str(path)) + ": " + message):
        read_results(path)


def test_json_rejects_what_is_rejected(tmp_path):
    """The files above that are not JSON are not JSON for json.loads either (the ones that are
    JSON have values lvis-api cannot evaluate)."""
    for text in ("", TRUNCATED, DOUBLE_COMMA, TRAILING):
        with pytest.raises(ValueError):
            json.loads(text)


def test_not_utf8_names_the_byte(tmp_path):
    text = f'[{GOOD}, {{"note": "'.encode() + b"caf\xe9" + b'", ' + GOOD[1:].encode() + b"]"
    path = write(tmp_path, text)
    with pytest.raises(UnicodeDecodeError):
        json.loads(text)
    with pytest.raises(DataError, match=re.escape(str(path)) + r": not UTF-8 text at byte " + str(text.index(b"\xe9"))):
        read_results(path)


def test_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read the results file .*nothing.json"):
        read_results(tmp_path / "nothing.json")


def test_parse_results_names_its_source():
    with pytest.raises(DataError, match=r"^my results: detection #0: Object missing required field `category_id`"):
        parse_results(b'[{"image_id": 1, "score": 1}]', "my results")


# ---- spans: the file decoded in pieces cut between elements ----------------------------------
def test_a_well_formed_file_is_decoded_in_spans(tmp_path, monkeypatch):
    """batch=7 cuts the array into spans of about 900 bytes, each cut between a '}' and a '{'
    with a comma between; every span decodes, so the element-by-element reader is never used,
    also where the mask comes first (its '}' followed by a comma inside the detection)."""
    from lt_bench.detection import results_file

    def element_path(*args):
        raise AssertionError("the element-by-element reader was used")
    monkeypatch.setattr(results_file, "_decode", element_path)
    reference = [{"segmentation": d.pop("segmentation"), **d} for d in detections(200, 9)]
    text = json.dumps(reference, indent=1)
    spans = results_file._spans(text.encode(), 128 * 7)
    assert len(spans) > 20
    path = write(tmp_path, text)
    assert_columns_equal(read_results(path, batch=7), reference)
    assert_columns_equal(read_results(path, batch=7, masks="read", workers=3), reference)


def test_cuts_guessed_inside_strings_change_nothing(tmp_path):
    """Extra keys whose strings hold '}, {', '} ,' and '}\\n,{' (where a cut may be guessed):
    the columns are json.load's, whatever the span size."""
    reference = detections(60, 10)
    for i, d in enumerate(reference):
        d["note"] = ["}, {", "x} ,y", "}\n,{", '\\"},{"'][i % 4] * (1 + i % 3)
        d["nested"] = {"a": [{"b": "},"}, {"c": 1}], "d": {}}
    path = write(tmp_path, json.dumps(reference))
    for batch in (1, 2, 3, 5, 8, 16_384):
        assert_columns_equal(read_results(path, batch=batch), reference)


@pytest.mark.parametrize("gap", [", ,", ",\f", "\f,", ",\v"])
def test_a_bad_gap_between_elements_is_an_error(tmp_path, gap):
    """What lies between two spans (a '}', whitespace, a comma) is JSON's whitespace only: a
    second comma or a form feed there is an error, as it is for json.loads."""
    items = [json.dumps(d) for d in detections(30, 11)]
    text = "[" + ", ".join(items[:15]) + gap + " " + ", ".join(items[15:]) + "]"
    with pytest.raises(ValueError):
        json.loads(text)
    for batch in (1, 4, 16_384):
        with pytest.raises(DataError, match="not valid JSON"):
            read_results(write(tmp_path, text), batch=batch)


@pytest.mark.parametrize("text", ["[{GOOD},]", "[{GOOD}, {GOOD},\n]", "[{GOOD}]]", "[[{GOOD}]", "[{GOOD}] x"])
def test_a_broken_end_is_an_error(tmp_path, text):
    text = text.replace("{GOOD}", GOOD)
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(DataError):
        read_results(write(tmp_path, text), batch=1)


# ---- meanwhile: other work run exactly once, whichever way the file is read -------------------
def _odd_element(reference: list[dict], k: int) -> list[dict]:
    """Detection k begins with a long string and then a nested list of objects: a span that
    begins at it is cut at the nested '}, {' (a valid file the spans cannot decode)."""
    reference[k] = {"pad": "x" * 300, "nested": [{"a": 1}, {"b": "c"}], **reference[k]}
    return reference


class Meanwhile:
    """Counts its calls, notes the pid it ran in and how many child processes were alive then,
    returns a value or raises ``error``."""

    def __init__(self, error: BaseException | None = None):
        self.error, self.calls, self.pids, self.children = error, 0, [], []

    def __call__(self):
        import multiprocessing
        self.calls += 1
        self.pids.append(os.getpid())
        self.children.append(len(multiprocessing.active_children()))
        if self.error is not None:
            raise self.error
        return {"annotations": "indexed"}


def _spy(monkeypatch) -> dict:
    """Records whether the span reading gave columns (None: the element-by-element reading
    followed) and which functions were run through forked_map."""
    from lt_bench.detection import results_file
    seen: dict = {"spans": [], "forked": []}
    parse_spans, forked_map = results_file._parse_spans, results_file.forked_map

    def spy_parse_spans(*args, **kwargs):
        out = parse_spans(*args, **kwargs)
        seen["spans"].append(out is not None)
        return out

    def spy_forked_map(function, *args, **kwargs):
        seen["forked"].append(function.__name__)
        return forked_map(function, *args, **kwargs)
    monkeypatch.setattr(results_file, "_parse_spans", spy_parse_spans)
    monkeypatch.setattr(results_file, "forked_map", spy_forked_map)
    return seen


# (odd element's index or None, workers, masks) -> (the spans decoded?, functions run forked)
MEANWHILE_CASES = {
    (None, 1, "read"): (True, []),                                 # spans, one process
    (None, 2, "read"): (True, ["_decode_spans"]),                  # spans, forked readers
    (None, 2, "skip"): (True, ["_decode_spans"]),
    (0, 1, "read"): (False, []),                                   # the first span fails: elements
    (0, 2, "read"): (False, []),                                   # elements, masks in one process
    (0, 2, "skip"): (False, ["_decode_group"]),                    # elements, forked readers
    (30, 1, "read"): (False, []),                                  # a later span fails
    (30, 2, "read"): (False, ["_decode_spans"]),                   # forked spans fail, then elements
    (30, 2, "skip"): (False, ["_decode_spans", "_decode_group"]),  # ... read by forked readers too
}


@pytest.mark.parametrize("odd,workers,masks", list(MEANWHILE_CASES))
def test_meanwhile_runs_exactly_once_in_this_process_whichever_way_the_file_is_read(tmp_path, monkeypatch,
                                                                                     odd, workers, masks):
    from lt_bench.detection import forked
    if workers > 1 and not forked.can_fork():
        pytest.skip("the 'fork' start method is not available here")
    reference = detections(60, 20)
    if odd is not None:
        _odd_element(reference, odd)
    path = write(tmp_path, json.dumps(reference))
    seen = _spy(monkeypatch)
    meanwhile = Meanwhile()
    columns = read_results(path, masks=masks, batch=1, workers=workers, meanwhile=meanwhile)
    assert meanwhile.calls == 1 and meanwhile.pids == [os.getpid()]
    spans_decoded, forked_functions = MEANWHILE_CASES[odd, workers, masks]
    assert seen["spans"] == [spans_decoded] and seen["forked"] == forked_functions    # the path meant
    if forked_functions:                   # run while the first forked readers decoded
        assert meanwhile.children[0] >= 1
    loaded = json.loads(path.read_bytes())
    assert_columns_equal(columns, loaded if masks == "read" else
                         [{k: v for k, v in d.items() if k != "segmentation"} for d in loaded])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_once_keeps_meanwhiles_value(tmp_path, workers):
    from lt_bench.detection.forked import Once
    path = write(tmp_path, json.dumps(detections(40, 21)))
    meanwhile = Meanwhile()
    once = Once(meanwhile)
    columns = read_results(path, batch=1, workers=workers, meanwhile=once)
    assert meanwhile.calls == 1
    assert once.result() == {"annotations": "indexed"} and meanwhile.calls == 1
    assert_columns_equal(columns, json.loads(path.read_bytes()))


@pytest.mark.parametrize("odd", [None, 30])
@pytest.mark.parametrize("workers", [1, 2])
def test_meanwhiles_error_is_raised_when_the_file_is_fine(tmp_path, workers, odd):
    from lt_bench.detection.forked import Once
    reference = detections(60, 22)
    if odd is not None:
        _odd_element(reference, odd)
    path = write(tmp_path, json.dumps(reference))
    meanwhile = Meanwhile(RuntimeError("the annotations are broken"))
    with pytest.raises(RuntimeError, match=r"^the annotations are broken$"):
        read_results(path, batch=1, workers=workers, meanwhile=meanwhile)
    assert meanwhile.calls == 1
    once = Once(Meanwhile(RuntimeError("kept")))        # a Once: its error raised, and kept
    with pytest.raises(RuntimeError, match=r"^kept$") as raised:
        read_results(path, batch=1, workers=workers, meanwhile=once)
    with pytest.raises(RuntimeError, match=r"^kept$") as again:
        once.result()
    assert again.value is raised.value


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_the_results_files_error_wins_over_meanwhiles(tmp_path, workers):
    """Both broken: the DataError about the results file is the one raised (meanwhile, if it
    ran at all, ran once)."""
    reference = detections(100, 23)
    reference[45]["score"] = "high"
    path = write(tmp_path, json.dumps(reference))
    for bad in (path, write(tmp_path, TRUNCATED, "truncated.json"), write(tmp_path, "", "empty.json"),
                tmp_path / "nothing.json"):
        meanwhile = Meanwhile(RuntimeError("the annotations are broken"))
        with pytest.raises(DataError, match=re.escape(str(bad))):
            read_results(bad, batch=7, workers=workers, meanwhile=meanwhile)
        assert meanwhile.calls <= 1
    meanwhile = Meanwhile(RuntimeError("the annotations are broken"))
    with pytest.raises(DataError, match=r"detection #45, score: Expected `float`, got `str`"):
        read_results(path, batch=7, workers=workers, meanwhile=meanwhile)


# ---- MaskColumn's buffers: an mmap, bytes, a bytearray ------------------------------------------
def _with_odd_masks(n: int, seed: int) -> list[dict]:
    reference = detections(n, seed)
    reference[3]["segmentation"] = [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0]]
    reference[7]["segmentation"] = {"size": [3, 2], "counts": [1, 4, 1]}
    del reference[9]["segmentation"]
    return reference


@pytest.mark.parametrize("workers", [1, 2])
def test_mask_columns_over_mmap_bytes_and_bytearray_give_the_same(tmp_path, workers):
    path = write(tmp_path, json.dumps(_with_odd_masks(50, 24)))
    loaded = json.loads(path.read_bytes())
    expected = [_as_read(d.get("segmentation")) for d in loaded]
    read = read_results(path, batch=1, workers=workers)["segmentation"]
    assert isinstance(read.buffer, mmap.mmap)
    parsed = parse_results(path.read_bytes(), batch=1)["segmentation"]
    assert isinstance(parsed.buffer, bytearray)
    columns = {"mmap": read, "bytearray": parsed,
               "bytes": MaskColumn(read.sizes, bytes(read.buffer), read.starts, read.ends, read.other),
               "bytearray copy": MaskColumn(read.sizes, bytearray(read.buffer), read.starts, read.ends, read.other)}
    order = np.random.default_rng(0).permutation(50)
    for name, column in columns.items():
        taken, items = column.take(order), [column[int(i)] for i in order]
        assert taken == items == [expected[i] for i in order], name
        assert column.take(np.arange(50)) == expected and list(column) == expected, name
        for mask in taken + items:
            if isinstance(mask, dict) and not isinstance(mask["counts"], list):
                assert type(mask["counts"]) is bytes, name


def test_compressed_says_whether_every_mask_there_is_a_compressed_rle(tmp_path):
    path = write(tmp_path, json.dumps(_with_odd_masks(50, 25)))
    loaded = json.loads(path.read_bytes())
    column = read_results(path, batch=1)["segmentation"]
    plain = [i for i, d in enumerate(loaded)
             if isinstance(d.get("segmentation"), dict) and isinstance(d["segmentation"]["counts"], str)]
    assert sorted(set(range(50)) - set(plain)) == [3, 7, 9]         # polygon, uncompressed RLE, none
    assert column.compressed(np.array(plain)) is True
    assert column.compressed(np.array(plain[10:20])) is True
    assert column.compressed(np.zeros(0, np.int64)) is True
    for odd in (3, 7, 9, 3 - 50):                                     # also as a negative position
        assert column.compressed(np.array(plain[:5] + [odd] + plain[5:10])) is False, odd
        assert column.compressed(np.array([odd])) is False, odd
    every = read_results(write(tmp_path, json.dumps(detections(20, 26)), "plain.json"))["segmentation"]
    assert not every.other and every.compressed(np.arange(20)) is True


# ---- read_annotations(masks="skip" | "raw"): what an evaluation reads, polygons as JSON text ----
LVIS_SAMPLE = ROOT.parent / "shared" / "data" / "lvis" / "lvis_v0.5_val_100.json"


@pytest.mark.skipif(not LVIS_SAMPLE.is_file(), reason="../shared/data/lvis not present")
@pytest.mark.parametrize("masks", ["skip", "raw"])
def test_typed_annotations_are_json_loads_less_the_polygons(tmp_path, masks):
    """The real LVIS v0.5 sample: images and categories as json.load gives them, each
    annotation json.load's less its segmentation ("skip") or with it as JSON text that decodes
    to json.load's ("raw"); an ``ignore`` key kept where one has it; the box evaluation (and
    with "raw" the mask evaluation) on either gives the same numbers."""
    import msgspec

    from lt_bench.detection.fast_eval import FastLVISEval
    from lt_bench.detection.results_file import read_annotations
    expected = json.loads(LVIS_SAMPLE.read_text())
    got = read_annotations(LVIS_SAMPLE, masks=masks)
    assert got["images"] == expected["images"] and got["categories"] == expected["categories"]
    if masks == "raw":
        assert all(isinstance(a["segmentation"], msgspec.Raw) for a in got["annotations"])
        assert [msgspec.json.decode(a["segmentation"]) for a in got["annotations"]] == \
            [a["segmentation"] for a in expected["annotations"]]
    assert [{k: v for k, v in a.items() if k != "segmentation"} for a in got["annotations"]] == \
        [{k: v for k, v in a.items() if k != "segmentation"} for a in expected["annotations"]]
    assert read_annotations(LVIS_SAMPLE) == expected
    with_ignore = json.loads(LVIS_SAMPLE.read_text())
    with_ignore["annotations"][3]["ignore"] = 1
    path = tmp_path / "with_ignore.json"
    path.write_text(json.dumps(with_ignore))
    ignored = read_annotations(path, masks=masks)
    assert ignored["annotations"][3]["ignore"] == 1 and "ignore" not in ignored["annotations"][2]
    rng = np.random.default_rng(0)
    dets = []
    for a in expected["annotations"]:
        image = next(i for i in expected["images"] if i["id"] == a["image_id"])
        rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], image["height"], image["width"]))
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.random()),
                     "bbox": [v + float(rng.normal(0, 2)) for v in a["bbox"]],
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    kinds = ["bbox", "segm"] if masks == "raw" else ["bbox"]
    for kind in kinds:
        assert FastLVISEval(got, kind).evaluate(dets) == FastLVISEval(expected, kind).evaluate(dets)
    with pytest.raises(ValueError, match="masks must be one of"):
        read_annotations(LVIS_SAMPLE, masks="lazy")


@pytest.mark.skipif(not LVIS_SAMPLE.is_file(), reason="../shared/data/lvis not present")
@pytest.mark.parametrize("masks", ["skip", "raw"])
@pytest.mark.parametrize("damage", ["no bbox", "no area", "annotations not a list", "no images",
                                    "an annotation not an object"])
def test_annotations_not_shaped_so_are_read_whole(tmp_path, damage, masks):
    """A file the fields cannot be taken from is decoded whole, as json.load would, so the
    evaluator names the problem as it does for masks="read"."""
    from lt_bench.detection.fast_eval import FastLVISEval
    from lt_bench.detection.results_file import read_annotations
    data = json.loads(LVIS_SAMPLE.read_text())
    if damage == "no bbox":
        del data["annotations"][5]["bbox"]
    elif damage == "no area":
        del data["annotations"][5]["area"]
    elif damage == "annotations not a list":
        data["annotations"] = {"0": data["annotations"][0]}
    elif damage == "no images":
        del data["images"]
    else:
        data["annotations"][5] = [1, 2]
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(data))
    assert read_annotations(path, masks=masks) == data
    with pytest.raises(DataError) as with_masks:
        FastLVISEval(read_annotations(path), "bbox")
    with pytest.raises(DataError) as typed:
        FastLVISEval(read_annotations(path, masks=masks), "bbox")
    assert str(typed.value) == str(with_masks.value)
