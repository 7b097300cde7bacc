"""Split files of the OLTR release (ImageNet-LT, Places-LT): `<relative image path> <label>`.

Every problem is reported with the split file and its line number, and every image error
with the image path and the line that lists it.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image
from torch.utils.data import Dataset

from lt_bench.errors import DataError
from lt_bench.progress import progress_bar
from lt_bench.run_folder import REPO

MANIFEST = REPO / "data_splits" / "manifest.json"


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


def parse_split_file(path: str | os.PathLike, num_classes: int | None = None) -> tuple[list[SplitEntry], list[Problem]]:
    """All well-formed entries, and a Problem for every malformed or out-of-range line."""
    path = Path(path)
    if not path.is_file():
        return [], [Problem(str(path), None, "split file not found")]
    entries, problems, seen = [], [], {}
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        problems.append(Problem(str(path), None, "does not end with a newline (truncated file?)"))
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        fields = line.rsplit(maxsplit=1)
        where = (str(path), number)
        if len(fields) != 2:
            problems.append(Problem(*where, f"expected '<image path> <label>', got {line!r}"))
            continue
        image, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            problems.append(Problem(*where, f"label {label_text!r} is not an integer"))
            continue
        if label < 0 or (num_classes is not None and label >= num_classes):
            valid = f"0..{num_classes - 1}" if num_classes is not None else ">= 0"
            problems.append(Problem(*where, f"label {label} out of range ({valid})"))
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


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")   # decodes the whole image: truncation shows here


def image_problem(root: Path, split_file: str | os.PathLike, entry: SplitEntry) -> Problem | None:
    """None if the listed image exists and decodes, else what is wrong with it."""
    try:
        load_rgb(root / entry.path)
        return None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
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
    """Images listed in a split file, under ``root``, as PIL RGB images with their labels."""

    def __init__(self, root: str | os.PathLike, split_file: str | os.PathLike, entries: list[SplitEntry]):
        self.root, self.split_file, self.entries = Path(root), Path(split_file), entries
        self.targets = [e.label for e in entries]

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        entry = self.entries[i]
        try:
            image = load_rgb(self.root / entry.path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise DataError(f"{self.split_file}:{entry.line}: cannot read image {self.root / entry.path}: {err} "
                            "(data.skip_bad=true skips unreadable images and lists them in the records)") from err
        return image, entry.label
