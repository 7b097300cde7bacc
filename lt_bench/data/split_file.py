"""Split files of the OLTR release (ImageNet-LT, Places-LT): `<relative image path> <label>`.

Every problem is reported with the split file and its line number, and every image error
with the image path and the line that lists it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from torch.utils.data import Dataset

from lt_bench.data.decoders import UNREADABLE_IMAGE, image_decoder, load_rgb
from lt_bench.errors import DataError
from lt_bench.progress import progress_bar
from lt_bench.run_folder import SPLITS_DIR

MANIFEST = SPLITS_DIR / "manifest.json"


@dataclass(frozen=True)
class SplitEntry:
    path: str
    label: int
    line: int          # 1-based line number in the split file


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int | None   # None: the problem is about the whole file
    message: str

    def __str__(self) -> str:
        return f"{self.file}{'' if self.line is None else f':{self.line}'}: {self.message}"


LABEL = re.compile(r"[0-9]+", re.ASCII)   # plain ASCII decimal digits: int() alone also takes '+1', '0_0', '١'
SEPARATORS = " \t"                        # between path and label; other (unicode) spaces are not separators
SPACE = " \t\r\f\v"                      # stripped from both ends of a line (\r: Windows line ends)
MAX_LABEL_DIGITS = 18


def _shown(text: str, limit: int = 120) -> str:
    """repr of a line or field, shortened so that one bad line cannot flood the report."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _int_like(text: str) -> bool:
    """Whether Python's int() takes it ('-1', '+1', '0_0', '١'): refused, but not as 'not an integer'."""
    try:
        int(text)
        return True
    except ValueError:
        return False


def path_problem(image: str) -> str | None:
    """Why a listed image path is refused, or None. Paths are relative to the data root and
    may not contain a '..' component at all, even one that stays inside (``a/../b.jpg``):
    the official files never do, and a path that can climb can leave the root. A backslash
    counts as a separator here too (``..\\x.jpg``, ``\\x.jpg`` are refused)."""
    if image.startswith(("/", "\\")):
        return f"path {_shown(image)} is absolute; paths are relative to the data root"
    if ".." in re.split(r"[/\\]", image):
        return f"path {_shown(image)} contains '..'; paths must stay under the data root, written without '..'"
    return None


def parse_split_file(path: str | os.PathLike, num_classes: int | None = None) -> tuple[list[SplitEntry], list[Problem]]:
    """All well-formed entries, and a Problem for every malformed or out-of-range line.

    A line is ``<relative image path> <label>``, separated by ASCII spaces or tabs (the path
    may itself contain spaces; the label is the last field). The file is UTF-8; a leading
    byte order mark is ignored, and a line that is not valid UTF-8 is a Problem. Lines are
    split on '\\n' only (with an optional '\\r' before it), so line numbers are those of
    an editor or ``wc -l``. The path must be relative and free of '..' components (see
    ``path_problem``). The label must be plain ASCII decimal digits: '+1', '-1', '1.0',
    '0_0' and non-ASCII digits such as '١' are refused; leading zeros are accepted
    ('007' is label 7).
    """
    path = Path(path)
    if not path.is_file():
        return [], [Problem(str(path), None, "split file not found")]
    try:
        raw = path.read_bytes()
    except OSError as err:
        return [], [Problem(str(path), None, f"cannot read the split file: {err}")]
    entries, problems, seen = [], [], {}
    if raw and not raw.endswith(b"\n"):
        problems.append(Problem(str(path), None, "does not end with a newline (truncated file?)"))
    # surrogateescape: a byte that is not UTF-8 becomes a lone surrogate, reported below
    lines = raw.decode("utf-8-sig", errors="surrogateescape").split("\n")
    if lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        where = (str(path), number)
        if any("\udc80" <= c <= "\udcff" for c in line):
            shown = line.encode("utf-8", errors="surrogateescape")
            problems.append(Problem(*where, f"not valid UTF-8 text: {shown[:120]!r}"))
            continue
        text = line.strip(SPACE)
        cut = max(text.rfind(c) for c in SEPARATORS)
        image, label_text = text[:cut].rstrip(SEPARATORS), text[cut + 1:]
        if cut < 0 or not image:
            problems.append(Problem(*where, f"expected '<image path> <label>', got {_shown(line.rstrip(chr(13)))}"))
            continue
        why = path_problem(image)
        if why is not None:
            problems.append(Problem(*where, why))
            continue
        if not LABEL.fullmatch(label_text):
            why = "is not a plain non-negative integer (digits 0-9 only)" if _int_like(label_text) else "is not an integer"
            problems.append(Problem(*where, f"label {_shown(label_text)} {why}"))
            continue
        valid = f" (0..{num_classes - 1})" if num_classes is not None else ""
        if len(label_text.lstrip("0")) > MAX_LABEL_DIGITS:
            problems.append(Problem(*where, f"label {_shown(label_text, 40)} is too large{valid}"))
            continue
        label = int(label_text)
        if num_classes is not None and label >= num_classes:
            problems.append(Problem(*where, f"label {label} out of range{valid}"))
            continue
        if image in seen:
            problems.append(Problem(*where, f"{image} is listed twice (first on line {seen[image]})"))
            continue
        seen[image] = number
        entries.append(SplitEntry(image, label, number))
    return entries, problems


def read_split_file(path: str | os.PathLike, num_classes: int | None = None) -> list[SplitEntry]:
    """Entries of a split file; DataError listing the problems if there is any."""
    entries, problems = parse_split_file(path, num_classes)
    if problems:
        shown = "\n  ".join(map(str, problems[:10]))
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(f"{len(problems)} problem(s) in split file {path}:\n  {shown}{more}")
    return entries


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: str | os.PathLike = MANIFEST) -> dict[str, dict]:
    """The known official split files, by file name."""
    return {entry["name"]: entry for entry in json.loads(Path(path).read_text())["files"]}


def image_problem(root: Path, split_file: str | os.PathLike, entry: SplitEntry) -> Problem | None:
    """None if the listed image exists and decodes, else what is wrong with it."""
    try:
        load_rgb(root / entry.path)
        return None
    except UNREADABLE_IMAGE as err:
        return Problem(str(split_file), entry.line, f"cannot read image {root / entry.path}: {err}")


def scan_images(root: Path, split_file: str | os.PathLike, entries: Iterable[SplitEntry], *,
                workers: int | None = None, show_progress: bool = True) -> list[Problem]:
    """Decode every listed image (threads: PIL releases the GIL while decoding)."""
    entries = list(entries)
    workers = workers or min(32, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda e: image_problem(root, split_file, e), entries, chunksize=64)
        found = [p for p in progress_bar(results, show_progress, f"images of {Path(split_file).name}", total=len(entries))
                 if p is not None]
    return found


class SplitFileDataset(Dataset):
    """Images listed in a split file, under ``root``, with their labels; ``decoder`` (a
    ``data.decoder`` name) makes them PIL RGB images or uint8 tensors."""

    def __init__(self, root: str | os.PathLike, split_file: str | os.PathLike, entries: list[SplitEntry],
                 decoder: str = "pil"):
        self.root, self.split_file, self.entries = Path(root), Path(split_file), entries
        self.targets = [e.label for e in entries]
        self.decode = image_decoder(decoder)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        entry = self.entries[i]
        try:
            image = self.decode(self.root / entry.path)
        except UNREADABLE_IMAGE as err:
            raise DataError(f"{self.split_file}:{entry.line}: cannot read image {self.root / entry.path}: {err} "
                            "(data.skip_bad=true skips unreadable images and lists them in the records)") from err
        return image, entry.label
