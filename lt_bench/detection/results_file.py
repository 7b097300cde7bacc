"""A detection results file (the LVIS/COCO results format) read into columns, not dicts.

The file is a JSON array of objects with ``image_id``, ``category_id``, ``score`` and ``bbox``
``[x, y, w, h]`` and/or ``segmentation`` (compressed RLE ``{"size": [h, w], "counts": "..."}``;
polygons and uncompressed RLE as lvis-api accepts them).  ``json.load`` of LVIS v1 val's 5.9
million detections makes as many dicts (3.5 GiB for boxes, 5.9 GiB for masks); here msgspec
decodes the file a span at a time straight into typed structs, turned into numpy columns and
let go:

1. the array's body is cut into spans of about ``128 * batch`` bytes, each cut between a ``}``
   and a ``{`` that a comma separates (a guess: it could lie inside a string);
2. each span is decoded as ``[`` + span + ``]``.  That succeeds only if the span is whole
   elements (a cut inside a string or a nested value leaves it unterminated), so when every
   span decodes, the spans are exactly the array's elements, in order.

If anything fails, the file is read element by element instead: the array into
``msgspec.Raw`` elements (views of the file's bytes, the JSON checked and split), then batches
of elements decoded; that names every problem exactly.  Either way the Python objects alive at
any moment are one span's or batch's.  Masks stay compact: every compressed RLE's counts in
one bytes buffer with offsets (``MaskColumn``), a dict made only for the detections the
evaluator looks at.  Every JSON detail (key order, whitespace, extra keys,
exponents, string escapes, integer scores) is msgspec's, which follows the JSON standard;
numbers outside float64 and the non-standard ``NaN``/``Infinity`` are errors.  Every problem is
a ``DataError`` naming the file and the detection (its index in the array) or the byte.
"""
from __future__ import annotations

import codecs
import mmap
import os
import re
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from lt_bench.detection.forked import Once, can_fork, forked_map, no_gc
from lt_bench.errors import DataError

BATCH = 16_384                   # detections decoded into Python objects at a time
_INDEX = re.compile(r"\$\[(\d+)\]")


def _types(need_masks: bool):
    """The structs for one reading: masks that are not needed are only checked to be JSON
    (kept as raw views, no objects made from their counts)."""
    import msgspec
    from msgspec import UNSET, UnsetType

    class RLE(msgspec.Struct, gc=False):
        size: tuple[int, int]                      # [height, width]
        counts: str | list[int]                    # compressed (str) or uncompressed RLE

    fields: list[tuple] = [("image_id", int), ("category_id", int), ("score", float)]
    fields.append(("bbox", tuple[float, float, float, float] | UnsetType, UNSET))
    fields.append(("segmentation", RLE | list[list[float]] | UnsetType, UNSET) if need_masks
                  else ("segmentation", msgspec.Raw | UnsetType, UNSET))
    return msgspec.defstruct("Detection", fields, gc=False), RLE


class MaskColumn(Sequence):
    """The detections' masks: compressed RLEs as one buffer holding their counts (mask i's at
    ``buffer[starts[i]:ends[i]]``) and their sizes; polygons, uncompressed RLEs and missing
    masks (None) kept as they are, by index.  ``column[i]`` is what the file held (``counts``
    as bytes, which pycocotools takes)."""

    def __init__(self, sizes: np.ndarray, buffer: Any, starts: np.ndarray, ends: np.ndarray, other: dict[int, Any]):
        self.sizes, self.buffer, self.starts, self.ends, self.other = sizes, buffer, starts, ends, other
        self._view = memoryview(buffer)
        # slices of bytes and of an mmap are bytes (one object each), of a bytearray a bytearray
        self._slice = buffer.__getitem__ if isinstance(buffer, (bytes, mmap.mmap)) else self._bytes

    def _bytes(self, part: slice) -> bytes:
        return self._view[part].tobytes()

    def compressed(self, positions: np.ndarray) -> bool:
        """Whether every mask at these positions is a compressed RLE (none kept in ``other``)."""
        return not self.other or not np.isin(np.asarray(positions) % max(len(self), 1),
                                             np.fromiter(self.other, np.int64, len(self.other))).any()

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> Any:
        i = range(len(self))[i]          # the index checks (and negative indices) of a list
        if i in self.other:
            return self.other[i]
        h, w = self.sizes[i].tolist()
        return {"size": [h, w], "counts": self._slice(slice(int(self.starts[i]), int(self.ends[i])))}

    def take(self, positions: Sequence[int] | np.ndarray) -> list:
        """``[column[i] for i in positions]``, vectorised."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if len(positions) and not (-len(self) <= positions.min() and positions.max() < len(self)):
            raise IndexError(f"positions out of range for {len(self)} masks")
        positions = positions % max(len(self), 1)
        starts, ends = self.starts[positions].tolist(), self.ends[positions].tolist()
        other = self.other
        # one [h, w] list for each run of equal sizes (an image's masks share theirs)
        hw = self.sizes[positions]
        change = np.flatnonzero(np.r_[True, (hw[1:] != hw[:-1]).any(1)]) if len(hw) else np.zeros(0, np.int64)
        sizes = hw[change].tolist()
        which = np.repeat(np.arange(len(change)), np.diff(np.r_[change, len(hw)]))
        counts = map(self._slice, map(slice, starts, ends))
        out = [{"size": sizes[j], "counts": c} for j, c in zip(which.tolist(), counts)]
        if other:
            for j, i in enumerate(positions.tolist()):
                if i in other:
                    out[j] = other[i]
        return out

    def __iter__(self) -> Iterator:
        for s in range(0, len(self), BATCH):
            yield from self.take(np.arange(s, min(s + BATCH, len(self))))

    def __contains__(self, value: Any) -> bool:
        if value is None:
            return any(v is None for v in self.other.values())
        return super().__contains__(value)

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        if value is None:
            stop = len(self) if stop is None else stop
            found = [i for i, v in self.other.items() if v is None and start <= i < stop]
            if found:
                return min(found)
            raise ValueError("None is not in the column")
        return super().index(value, start, stop)

    @property
    def nbytes(self) -> int:
        return len(self.buffer) + self.starts.nbytes + self.ends.nbytes + self.sizes.nbytes


class _Batches:
    """Columns gathered batch by batch."""

    def __init__(self, need_masks: bool, source: str):
        self.need_masks, self.source = need_masks, source
        self.first: int | None = None                # the index of the first detection added
        self.with_bbox: bool | None = None           # the first detection decides (lvis-api's rule)
        self.masks_in_file = False
        self.image_id: list = []
        self.category_id: list = []
        self.score: list = []
        self.bbox: list = []
        self.sizes: list = []
        self.counts = bytearray()          # grows in place: no second copy at the end
        self.lengths: list = []
        self.target: Any = None            # a shared buffer the counts are written into instead
        self.starts: list = []             # (then) where each mask's counts begin in it
        self.other: dict[int, Any] = {}

    def add(self, dets: list, first: int, rle_type: type, at: int | None = None) -> None:
        """One span's or batch's detections (``first``: the index of the first); ``at``: where
        their masks' counts go in ``target`` (else they are appended to ``counts``)."""
        from msgspec import UNSET
        n = len(dets)
        if self.first is None:
            self.first = first
        self.image_id.append(_int_column(dets, "image_id", first, self.source))
        self.category_id.append(_int_column(dets, "category_id", first, self.source))
        self.score.append(np.fromiter(map(attrgetter("score"), dets), np.float64, n))
        boxes = list(map(attrgetter("bbox"), dets))
        if self.with_bbox is None:
            self.with_bbox = boxes[0] is not UNSET
        without = boxes.count(UNSET)
        if without not in (0, n) or (without == 0) != self.with_bbox:
            j = next(j for j, b in enumerate(boxes) if (b is UNSET) == self.with_bbox)
            has, lacks = (0, first + j) if self.with_bbox else (first + j, 0)
            raise DataError(f"{self.source}: detection #{lacks} has no 'bbox' but detection #{has} has: "
                            "all detections or none (lvis-api's rule)")
        if self.with_bbox:
            self.bbox.append(np.fromiter(chain.from_iterable(boxes), np.float64, 4 * n).reshape(n, 4))
        segms = list(map(attrgetter("segmentation"), dets))
        self.masks_in_file = self.masks_in_file or segms.count(UNSET) < n
        if self.need_masks:
            self._add_masks(segms, first, rle_type, at)

    def _add_masks(self, segms: list, first: int, rle_type: type, at: int | None) -> None:
        from msgspec import UNSET
        n = len(segms)
        try:          # the usual file: every mask a compressed RLE
            counts = list(map(attrgetter("counts"), segms))
            text = "".join(counts)
            sizes = np.fromiter(chain.from_iterable(map(attrgetter("size"), segms)), np.int64, 2 * n).reshape(n, 2)
        except (AttributeError, TypeError):     # polygons, uncompressed RLE or no mask, somewhere
            counts, sizes = [], np.zeros((n, 2), np.int64)
            for j, s in enumerate(segms):
                if isinstance(s, rle_type) and isinstance(s.counts, str):
                    counts.append(s.counts)
                    sizes[j] = s.size
                else:
                    counts.append("")
                    self.other[first + j] = (None if s is UNSET else s if isinstance(s, list)
                                             else {"size": list(s.size), "counts": s.counts})
            text = "".join(counts)
        data = text.encode("utf-8")
        if len(data) == len(text):       # ASCII (as RLE counts are): characters are bytes
            lengths = np.fromiter(map(len, counts), np.int64, n)
        else:
            lengths = np.fromiter((len(c.encode("utf-8")) for c in counts), np.int64, n)
        self.sizes.append(sizes)
        if at is None:
            self.counts += data
        else:            # over the span's own bytes, already decoded (the counts are no longer than them)
            self.target[at:at + len(data)] = data
            self.starts.append(at + np.r_[0, np.cumsum(lengths)[:-1]])
        self.lengths.append(lengths)

    @classmethod
    def joined(cls, parts: list["_Batches"], source: str) -> "_Batches":
        """Consecutive runs of the file, decoded apart, as one (the first detection decides
        whether every one has a box, as in one pass)."""
        out = cls(parts[0].need_masks, source)
        out.with_bbox = parts[0].with_bbox
        for part in parts:
            if part.with_bbox is not None and part.with_bbox != out.with_bbox:
                first = part.first
                has, lacks = (0, first) if out.with_bbox else (first, 0)
                raise DataError(f"{source}: detection #{lacks} has no 'bbox' but detection #{has} has: "
                                "all detections or none (lvis-api's rule)")
            out.masks_in_file = out.masks_in_file or part.masks_in_file
            for name in ("image_id", "category_id", "score", "bbox", "sizes", "lengths", "starts"):
                getattr(out, name).extend(getattr(part, name))
            out.counts += part.counts
            out.other.update(part.other)
        return out

    def columns(self) -> dict[str, Any]:
        def cat(parts: list, dtype, shape=(0,)) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(shape, dtype)
        out: dict[str, Any] = {"image_id": cat(self.image_id, np.int64), "category_id": cat(self.category_id, np.int64),
                               "score": cat(self.score, np.float64),
                               "bbox": cat(self.bbox, np.float64, (0, 4)) if self.with_bbox else None,
                               "segmentation": None, "masks_in_file": self.masks_in_file}
        if self.need_masks and self.masks_in_file:
            lengths = cat(self.lengths, np.int64)
            if self.target is not None:
                starts, buffer = cat(self.starts, np.int64), self.target
            else:
                starts, buffer = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64), self.counts
            out["segmentation"] = MaskColumn(cat(self.sizes, np.int64, (0, 2)), buffer, starts, starts + lengths,
                                             self.other)
        return out


def _int_column(dets: list, field: str, first: int, source: str) -> np.ndarray:
    try:
        return np.fromiter(map(attrgetter(field), dets), np.int64, len(dets))
    except OverflowError:
        bad = next(j for j, d in enumerate(dets) if not -2 ** 63 <= getattr(d, field) < 2 ** 63)
        raise DataError(f"{source}: detection #{first + bad}: {field} {getattr(dets[bad], field)} is out of "
                        "range (64-bit integers)") from None


MASKS = ("read", "skip", "auto")


def read_results(path: str | Path, masks: str = "read", batch: int = BATCH, workers: int = 1,
                 meanwhile: Callable[[], Any] | None = None) -> dict[str, Any]:
    """The columns of a results file: ``image_id``, ``category_id`` (int64), ``score``
    (float64), ``bbox`` ([n, 4] float64, or None when the detections have none),
    ``segmentation`` (a ``MaskColumn``, or None when they have none or the masks are not
    read) and ``masks_in_file`` (whether any detection has a mask).  ``FastLVISEval.evaluate``
    takes this dict as it is.

    ``masks``: ``read`` them; ``skip`` them (only checked to be JSON) unless the detections
    have no boxes, whose box evaluation needs them; ``auto``: read them when the first
    detection has one or has no box.  As lvis-api requires, either every detection has
    ``bbox`` or none has.  ``workers`` > 1 decodes contiguous runs of spans in that many
    forked processes and joins them in file order: the same columns, and the first problem in
    file order is the one reported.

    The file is read into shared anonymous memory; the masks' counts are written over the
    bytes of the span they came from once it is decoded (decoded counts are never longer than
    their JSON text), so the masks cost no second buffer and forked readers hand them back
    through that memory, not through pipes.  Should anything fail, the file is read again and
    element by element.

    ``meanwhile``: other work for this process, run once while forked readers decode (or after
    the reading, when there are none); what it raises is raised after any problem with the
    file.  A ``forked.Once`` keeps what it returned."""
    source = str(path)
    try:
        data = _read_shared(Path(path))
    except OSError as err:
        raise DataError(f"cannot read the results file {source}: {err.strerror or err}") from None
    once = None if meanwhile is None else meanwhile if isinstance(meanwhile, Once) else Once(meanwhile)
    with no_gc():
        columns = _parse(data, source, masks, batch, workers, lambda: Path(path).read_bytes(), once)
    if once is not None:
        once.result()            # now, if no forked reader left time for it; its error after the file's
    return columns


def _read_shared(path: Path) -> Any:
    """The file's bytes in shared anonymous memory (an ``mmap``; empty files as b"")."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b""
        buffer = mmap.mmap(-1, size)
        with memoryview(buffer) as view:
            got = 0
            while got < size:
                n = f.readinto(view[got:])
                if not n:
                    raise OSError(f"the file became shorter while it was read ({got} of {size} bytes)")
                got += n
    return buffer


def parse_results(data: bytes, source: str = "the results", masks: str = "read",
                  batch: int = BATCH, workers: int = 1) -> dict[str, Any]:
    """``read_results`` on the file's bytes (``source`` names it in errors); the masks' counts
    are copied into a buffer of their own, and read in one process."""
    with no_gc():
        return _parse(data, source, masks, batch, workers, None)


def _parse(data: Any, source: str, masks: str, batch: int, workers: int, reread: Any,
           meanwhile: Once | None = None) -> dict[str, Any]:
    """``data``: bytes, or a shared ``mmap`` the masks' counts may be written into (then
    ``reread()`` gives the file's bytes again, for the element-by-element reading)."""
    import msgspec
    if masks not in MASKS:
        raise ValueError(f"masks must be one of {MASKS}, not {masks!r}")
    if not _SOMETHING.search(data):
        raise DataError(f"{source}: empty, not a JSON array of detections")
    _check_utf8(data, source)
    fast = _parse_spans(data, source, masks, batch, workers, not isinstance(data, bytes), meanwhile)
    if fast is not None:
        return fast.columns()
    if not isinstance(data, bytes):
        data = reread()          # the spans tried may have been written over
    try:
        elements = msgspec.json.decode(data, type=list[msgspec.Raw])
    except msgspec.ValidationError as err:
        raise DataError(f"{source}: not a JSON array of detections ({err})") from None
    except msgspec.DecodeError as err:
        raise DataError(f"{source}: not valid JSON: {_reason(err, len(data))}") from None
    need_masks = _need_masks(masks, elements)
    starts = list(range(0, len(elements), batch))
    # masks are read in one process: their counts would come back through pipes, costing as much
    # time as the workers save (measured: 18.6 s against 18.4 s at LVIS v1 val's size) and memory
    readers = 1 if need_masks else max(1, min(workers, len(starts)))
    groups = [g.tolist() for g in np.array_split(np.asarray(starts, dtype=np.int64), readers)]
    if len(groups) > 1 and can_fork():
        out = _Batches.joined(forked_map(_decode_group, groups, (elements, need_masks, source, batch), meanwhile),
                              source)
    else:
        out = _decode(elements, starts, need_masks, source, batch)
    del elements
    return out.columns()


_WS = b" \t\n\r"                          # JSON's whitespace
_SPLIT = re.compile(rb"\}[ \t\n\r]*,[ \t\n\r]*\{")    # "}, {": where one detection may end and the next begin
_SOMETHING = re.compile(rb"[^ \t\n\r]")      # not whitespace


class _NotSplit(Exception):
    """The file could not be decoded in spans (a split inside a string, or any problem)."""


def _spans(data: bytes, size: int) -> list[tuple[int, int]] | None:
    """The array's body cut into spans of about ``size`` bytes, each cut between a ``}`` and
    a ``{`` with a comma between them (the comma and the whitespace around it left out).  A cut
    is only a guess: a span is proven to be whole elements when ``[`` + span + ``]`` decodes (a
    cut inside a string or a nested value leaves that text unterminated).  None: not
    ``[ ... ]`` with something inside."""
    first, last = 0, len(data) - 1
    while first < len(data) and data[first] in _WS:
        first += 1
    while last > first and data[last] in _WS:
        last -= 1
    if data[first:first + 1] != b"[" or data[last:last + 1] != b"]" or not _SOMETHING.search(data, first + 1, last):
        return None
    spans, at, end = [], first + 1, last
    while True:
        found = _SPLIT.search(data, at + size, end) if at + size < end else None
        if found is None:
            spans.append((at, end))
            return spans
        spans.append((at, found.start() + 1))
        at = found.end() - 1


def _parse_spans(data: Any, source: str, masks: str, batch: int, workers: int, in_place: bool,
                 meanwhile: Once | None = None) -> "_Batches | None":
    """The fast way: spans of the file decoded straight into typed structs (no raw split of
    every element first); ``in_place``: the masks' counts written over the spans' bytes in
    ``data`` (a shared mmap), so that forked readers can read masks too.  None when it does
    not apply or anything fails: the caller then reads the file element by element, which
    names the problem exactly."""
    import msgspec
    spans = _spans(data, max(64, 128 * batch))
    if spans is None:
        return None
    try:
        head = msgspec.json.decode(b"[" + data[spans[0][0]:spans[0][1]] + b"]", type=list[msgspec.Raw])
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    need_masks = _need_masks(masks, head)
    del head
    readers = 1 if need_masks and not in_place else max(1, min(workers, len(spans)))
    groups = [spans[g[0]:g[-1] + 1] for g in np.array_split(np.arange(len(spans)), readers) if len(g)]
    shared = (data, need_masks, source, in_place)
    try:
        if len(groups) > 1 and can_fork():
            parts, count = forked_map(_decode_spans, groups, shared, meanwhile), 0
            for part in parts:      # a part's indices are its own: shift them to the file's
                part.other = {count + i: v for i, v in part.other.items()}
                part.first = None if part.first is None else count + part.first
                count += sum(map(len, part.score))
            out = _Batches.joined(parts, source)
        else:
            out = _decode_spans(shared, spans)
    except (_NotSplit, DataError):
        return None
    out.target = data if in_place else None
    return out


def _decode_spans(shared: tuple, spans: list[tuple[int, int]]) -> "_Batches":
    """Spans of the file decoded into columns (``shared``: the file's bytes, need_masks,
    source); any problem raises ``_NotSplit`` (the indices here are not the file's)."""
    import msgspec
    data, need_masks, source, in_place = shared
    det_type, rle_type = _types(need_masks)
    decoder = msgspec.json.Decoder(list[det_type])
    out, first = _Batches(need_masks, source), 0
    out.target = data if in_place else None
    for start, end in spans:
        if not _SOMETHING.search(data, start, end):
            raise _NotSplit          # an empty element: "[..., ]" or ", ,"
        try:
            dets = decoder.decode(b"[" + data[start:end] + b"]")
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise _NotSplit from None
        if dets:
            out.add(dets, first, rle_type, start if in_place else None)
        first += len(dets)
        del dets
    out.target = None            # not sent back (the parent has the buffer)
    return out


def _decode_group(shared: tuple, starts: list[int]) -> "_Batches":
    """A forked reader's runs of batches (``shared``: the raw elements, need_masks, source, batch)."""
    elements, need_masks, source, batch = shared
    return _decode(elements, starts, need_masks, source, batch)


def _decode(elements: list, starts: list[int], need_masks: bool, source: str, batch: int) -> "_Batches":
    """The batches beginning at ``starts`` decoded into columns."""
    import msgspec
    det_type, rle_type = _types(need_masks)
    decoder = msgspec.json.Decoder(list[det_type])
    out = _Batches(need_masks, source)
    for first in starts:
        chunk = b"[" + b",".join(elements[first:first + batch]) + b"]"
        try:
            dets = decoder.decode(chunk)
        except (msgspec.ValidationError, msgspec.DecodeError) as err:
            raise DataError(_detection_error(err, first, source)) from None
        out.add(dets, first, rle_type)
        del dets
    return out


ANNOTATION_MASKS = ("read", "raw", "skip")


def read_annotations(path: str | Path, masks: str = "read") -> dict:
    """An LVIS annotation file as json.load gives it (msgspec, which checks the UTF-8 of every
    string it makes, with the garbage collector paused: it would otherwise walk the millions of
    new lists and dicts again and again).

    ``masks``: ``read``: json.load's; ``raw``: only ``images``, ``categories`` and
    ``annotations``, and of each annotation only what an evaluation reads (``id``,
    ``image_id``, ``category_id``, ``area``, ``bbox``, ``ignore``, ``segmentation``), its
    segmentation left as its JSON text (a ``msgspec.Raw``, decoded by the evaluator for the
    ground truth it matches); ``skip``: the same without the segmentation, for a box evaluation.
    Either way the polygons are checked to be JSON but not made into lists (LVIS v1 val's size:
    0.9-1.1 s against 1.9-2.4 s, freeing included).  A file not so shaped is decoded whole instead (the
    evaluator then names what is missing)."""
    import msgspec
    if masks not in ANNOTATION_MASKS:
        raise ValueError(f"masks must be one of {ANNOTATION_MASKS}, not {masks!r}")
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the LVIS annotations {path}: {err.strerror or err}") from None
    try:
        with no_gc():
            dataset = msgspec.json.decode(data) if masks == "read" else _typed_annotations(data, masks == "raw")
    except msgspec.DecodeError as err:
        raise DataError(f"cannot read the LVIS annotations {path}: not valid JSON: {_reason(err, len(data))}") from None
    if not isinstance(dataset, dict):
        raise DataError(f"the LVIS annotations {path}: not a JSON object with images, annotations and categories")
    return dataset


def _typed_annotations(data: bytes, segmentation: bool) -> Any:
    """``read_annotations(masks="raw" | "skip")``'s decoding."""
    import msgspec
    from msgspec import UNSET

    fields = [("id", Any), ("image_id", Any), ("category_id", Any), ("area", Any), ("bbox", Any),
              ("ignore", Any, UNSET)]
    if segmentation:
        fields.append(("segmentation", msgspec.Raw, UNSET))
    annotation = msgspec.defstruct("Annotation", fields, gc=False)
    top = msgspec.defstruct("Annotations", [("images", Any), ("annotations", list[annotation]), ("categories", Any)])
    try:
        decoded = msgspec.json.decode(data, type=top)
    except msgspec.ValidationError:
        return msgspec.json.decode(data)
    annotations = [{"id": a.id, "image_id": a.image_id, "category_id": a.category_id, "area": a.area, "bbox": a.bbox}
                   for a in decoded.annotations]
    for name in ("ignore", "segmentation") if segmentation else ("ignore",):    # the keys some lack
        for a, row in zip(decoded.annotations, annotations):
            value = getattr(a, name)
            if value is not UNSET:
                row[name] = value
    return {"images": decoded.images, "annotations": annotations, "categories": decoded.categories}


def _need_masks(masks: str, elements: list) -> bool:
    """Whether the masks are decoded: ``read``, or what the first detection has (it speaks for
    all, lvis-api's rule): no box, or (``auto``) a mask."""
    if masks == "read" or not elements:
        return masks == "read"
    keys = _keys(elements[0])
    return "bbox" not in keys or (masks == "auto" and "segmentation" in keys)


def _keys(element: Any) -> set:
    """The keys of one detection (none when it is not an object: its decoding says why)."""
    import msgspec
    try:
        return set(msgspec.json.decode(element, type=dict))
    except (msgspec.ValidationError, msgspec.DecodeError):
        return set()


def _check_utf8(data: Any, source: str) -> None:
    """json.load reads text: a file that is not UTF-8 is an error here too (msgspec alone does
    not look inside strings it skips)."""
    step = 1 << 24
    if data.isascii() if isinstance(data, bytes) else all(data[at:at + step].isascii()
                                                            for at in range(0, len(data), step)):
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    for at in range(0, len(data), step):
        try:
            decoder.decode(data[at:at + step], final=at + step >= len(data))
        except UnicodeDecodeError as err:
            raise DataError(f"{source}: not UTF-8 text at byte {at + err.start}") from None


def _reason(err: Exception, size: int | None = None) -> str:
    text = str(err)
    if text == "Input data was truncated":
        return "truncated: it ends inside a value" + (f" (at byte {size})" if size is not None else "")
    return text


def _detection_error(err: Exception, first: int, source: str) -> str:
    """msgspec's message with the detection's index in the whole file (``$[12].score`` in the
    batch -> detection #first+12, field score)."""
    text = str(err)
    found = _INDEX.search(text)
    if not found:
        return f"{source}: detections #{first}.. are not valid: {text}"
    index = first + int(found.group(1))
    field = text[found.end():].lstrip(".")
    what, _, _ = text.partition(" - at ")
    where = f", {field.rstrip('`')}" if field.rstrip("`") else ""
    return f"{source}: detection #{index}{where}: {what}"
