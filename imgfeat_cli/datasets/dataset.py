"""ShiTuRecDataset list files: parsing, writing, and deterministic stratified allocation.

A dataset root holds ``train.txt``, ``gallery.txt`` and ``query.txt``; each line is
``<path relative to root><space><integer label>``. Parsing here is shared by ``check``, ``split``,
``train`` and ``eval`` so that all commands agree on what a valid line is.
"""
from __future__ import annotations

import math
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Hashable, List, Optional, Sequence, Tuple, TypeVar

from imgfeat_cli.common import fsutil

SPLITS: Tuple[str, str, str] = ("train", "gallery", "query")

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One valid list line."""

    path: str
    label: int
    line: int = 0

    def text(self) -> str:
        return f"{self.path} {self.label}"


@dataclass
class Problem:
    """One finding; ``severity`` is ``error`` (fails the check), ``warning`` or ``info``."""

    code: str
    severity: str
    message: str
    file: Optional[str] = None
    line: Optional[int] = None

    def to_dict(self) -> Dict[str, object]:
        return {"code": self.code, "severity": self.severity, "file": self.file, "line": self.line,
                "message": self.message}


@dataclass
class ListFile:
    name: str
    entries: List[Entry] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    exists: bool = True


def parse_list_text(text: str, name: str) -> ListFile:
    """Parse the text of one list file, reporting every malformed line with its line number."""
    out = ListFile(name)
    for no, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            out.problems.append(Problem("blank_line", "warning", "blank line (PaddleX rejects it; imgfeat skips it)",
                                        name, no))
            continue
        fields = line.split(" ")
        if len(fields) != 2 or not fields[0] or not fields[1]:
            if "\t" in line:
                why = "fields separated by a tab; use one space"
            elif len(fields) > 2:
                why = "more than two space-separated fields (a path with spaces?)"
            else:
                why = "expected '<relative/path> <integer label>'"
            out.problems.append(Problem("malformed_line", "error", f"{why}: {line[:120]!r}", name, no))
            continue
        path, label = fields
        try:
            value = int(label)
        except ValueError:
            out.problems.append(Problem("non_integer_label", "error", f"label {label!r} is not an integer", name, no))
            continue
        if value < 0:
            out.problems.append(Problem("negative_label", "error", f"label {value} is negative", name, no))
            continue
        out.entries.append(Entry(path, value, no))
    return out


def read_list(root: Path, split: str) -> ListFile:
    path = root / f"{split}.txt"
    name = f"{split}.txt"
    if not path.is_file():
        lf = ListFile(name, exists=False)
        lf.problems.append(Problem("missing_list_file", "error", f"{name} not found in {root}", name))
        return lf
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        lf = ListFile(name)
        lf.problems.append(Problem("not_utf8", "error", f"not UTF-8 text (byte {exc.start})", name))
        return lf
    return parse_list_text(text, name)


def write_list(root: Path, split: str, entries: Sequence[Entry], keep_backup: bool = True) -> Optional[Path]:
    """Atomically write ``<split>.txt``; an existing file is kept as ``<split>.txt.bak``."""
    text = "".join(e.text() + "\n" for e in entries)
    return fsutil.write_text(root / f"{split}.txt", text, keep_backup=keep_backup)


def resolve_inside(root: Path, rel: str) -> Optional[Path]:
    """``root / rel`` when ``rel`` is relative and stays inside ``root`` lexically; else ``None``.

    The check is on the text (``..``, absolute paths, drive letters), not on resolved symlinks: a
    dataset whose ``images/`` is a symlink to shared storage is legitimate.
    """
    if rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        return None
    norm = os.path.normpath(rel.replace("\\", "/"))
    if norm == ".." or norm.startswith("../") or os.path.isabs(norm):
        return None
    return root / norm


def validate_percents(train: float, gallery: float, query: float) -> Optional[str]:
    """Return why the three percentages are unusable, or ``None``."""
    vals = {"train": train, "gallery": gallery, "query": query}
    for k, v in vals.items():
        if v < 0 or v > 100:
            return f"{k} percent {v} is outside 0..100"
    if gallery <= 0 or query <= 0:
        return "gallery and query percents must be greater than 0 (evaluation needs both)"
    total = train + gallery + query
    if not math.isclose(total, 100.0, abs_tol=1e-6):
        return f"train + gallery + query = {total:g}, must be 100"
    return None


def _apportion(n: int, ratios: Sequence[float]) -> List[int]:
    """Split ``n`` into integer parts proportional to ``ratios`` (largest remainder)."""
    total = sum(ratios)
    raw = [n * r / total for r in ratios]
    parts = [int(math.floor(x)) for x in raw]
    order = sorted(range(len(ratios)), key=lambda i: (-(raw[i] - parts[i]), i))
    for i in order[: n - sum(parts)]:
        parts[i] += 1
    return parts


def allocate(items: Sequence[T], labels: Sequence[Hashable], percents: Tuple[float, float, float],
             seed: int, stratify: bool = True) -> Tuple[List[T], List[T], List[T]]:
    """Deterministically assign items to (train, gallery, query).

    Stratified: every class is split in the given proportions, and whenever a class gets query items
    it also gets at least one gallery item (a query with no gallery match cannot be scored), as long
    as the class has two or more items. Same inputs and seed -> same output, regardless of input order.
    """
    rng = random.Random(seed)
    order = sorted(range(len(items)), key=lambda i: (str(labels[i]), repr(items[i])))
    parts: Tuple[List[T], List[T], List[T]] = ([], [], [])
    if not stratify:
        rng.shuffle(order)
        sizes = _apportion(len(order), percents)
        bounds = [0, sizes[0], sizes[0] + sizes[1], len(order)]
        for k in range(3):
            parts[k].extend(items[i] for i in order[bounds[k]:bounds[k + 1]])
        return parts
    by_label: Dict[str, List[int]] = defaultdict(list)
    for i in order:
        by_label[str(labels[i])].append(i)
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        n_train, n_gal, n_query = _apportion(len(idx), percents)
        if len(idx) >= 2 and n_query > 0 and n_gal == 0:
            if n_train > 0:
                n_train -= 1
            else:
                n_query -= 1
            n_gal += 1
        cut1, cut2 = n_train, n_train + n_gal
        parts[0].extend(items[i] for i in idx[:cut1])
        parts[1].extend(items[i] for i in idx[cut1:cut2])
        parts[2].extend(items[i] for i in idx[cut2:])
    return parts
