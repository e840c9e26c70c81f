"""ShiTuRecDataset list files: parsing, writing, and deterministic stratified allocation.

A dataset root holds ``train.txt``, ``gallery.txt`` and ``query.txt``; each line is
``<path relative to root><space><integer label>``. Parsing here is shared by ``check``, ``split``,
``train`` and ``eval`` so that all commands agree on what a valid line is: one space between a path
without spaces (PaddleX splits on them) and a non-negative integer. A BOM, CRLF line endings and
spaces around a line are read as PaddleClas training reads them and reported, because PaddleX's own
check trips over the BOM and the spaces. The three files are written together (:func:`write_lists`).
"""
from __future__ import annotations

import math
import os
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Hashable, List, Optional, Sequence, Tuple, TypeVar, Union

from imgfeat_cli.common import filetxn, paths
from imgfeat_cli.datasets import textio

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
    """One finding; ``severity`` is ``error`` (fails the check), ``warning`` or ``info``.
    ``related``: the other list lines a finding is about (``(file, line)``; a near-duplicate pair
    names both sides), kept apart so that a report can show them side by side."""

    code: str
    severity: str
    message: str
    file: Optional[str] = None
    line: Optional[int] = None
    related: Tuple[Tuple[str, int], ...] = ()

    def to_dict(self) -> Dict[str, object]:
        doc: Dict[str, object] = {"code": self.code, "severity": self.severity, "file": self.file,
                                  "line": self.line, "message": self.message}
        if self.related:
            doc["related"] = [{"file": f, "line": n} for f, n in self.related]
        return doc


@dataclass
class ListFile:
    name: str
    entries: List[Entry] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    exists: bool = True


#: Training sizes its classifier to the largest train label + 1; beyond this many classes the head
#: alone (512 x N float32 weights plus optimiser state) outgrows any GPU: a labelling mistake.
MAX_CLASSES = 1_000_000
#: Labels this sparse (classes > 10 x distinct labels, and over this many) waste head memory.
SPARSE_CLASSES = 10_000
_LABEL = re.compile(r"-?[0-9]+", re.ASCII)
#: Characters a listed path cannot hold: PaddleX splits list lines on spaces (and lines on newlines).
UNLISTABLE = frozenset(" \t\n\r\x0b\x0c")
SPACE_RULE = "PaddleX splits list lines on spaces, so a path with spaces cannot be listed"


def unlistable(rel: str) -> bool:
    """True when ``rel`` holds a character a list line cannot carry (see :data:`UNLISTABLE`)."""
    return any(c in UNLISTABLE for c in rel)


def _parse_line(line: str, name: str, no: int) -> Union[Entry, Problem]:
    fields = line.split(" ")
    if "\t" in line:
        return Problem("malformed_line", "error", f"fields separated by a tab; use one space: {line[:120]!r}", name, no)
    if len(fields) < 2:
        return Problem("malformed_line", "error", f"expected '<relative/path> <integer label>': {line[:120]!r}",
                       name, no)
    path, label = " ".join(fields[:-1]), fields[-1]
    if len(fields) > 2:
        if "" in fields:
            return Problem("malformed_line", "error", f"several spaces in a row; use one space between path and "
                           f"label: {line[:120]!r}", name, no)
        if _LABEL.fullmatch(label):
            return Problem("space_in_path", "error", f"path {path[:120]!r} contains spaces: {SPACE_RULE}; rename the "
                           "file (`imgfeat convert --out DIR` links such images under names with '_')", name, no)
        return Problem("malformed_line", "error", f"more than two space-separated fields: {line[:120]!r}", name, no)
    if not _LABEL.fullmatch(label):
        return Problem("non_integer_label", "error", f"label {label[:40]!r} is not an integer (class ids are "
                       "0, 1, 2, ...)", name, no)
    if label.startswith("-"):
        return Problem("negative_label", "error", f"label {label} is negative", name, no)
    return Entry(path, int(label), no)


def _encoding_problems(dec: textio.Decoded, name: str) -> List[Problem]:
    out = []
    if dec.bad_lines:
        more = f" (bad bytes on {textio.line_list(dec.bad_lines)})" if len(dec.bad_lines) > 1 else ""
        out.append(Problem("not_utf8", "error", f"{dec.describe_bad()}{more}; "
                           "re-save the file as UTF-8, e.g. `iconv -f GBK -t UTF-8`", name, dec.bad_line))
    if dec.bom:
        out.append(Problem("bom", "warning", "starts with a UTF-8 byte-order mark: imgfeat ignores it, but PaddleX "
                           "reads it as part of the first path (its check then reports that image as missing); "
                           "re-save without BOM", name, 1))
    if dec.crlf:
        out.append(Problem("crlf", "info", "Windows (CRLF) line endings: accepted by imgfeat and PaddleX", name))
    return out


def parse_list_text(text: Union[str, textio.Decoded], name: str) -> ListFile:
    """Parse one list file, reporting every malformed line with its line number and every encoding
    oddity of the file (BOM, CRLF, bytes that are not UTF-8, spaces around lines)."""
    dec = text if isinstance(text, textio.Decoded) else textio.decode(text.encode("utf-8"))
    out = ListFile(name, problems=_encoding_problems(dec, name))
    skip, padded = set(dec.bad_lines or ()), []
    for no, raw in enumerate(dec.lines(), start=1):
        line = raw.strip(" \t")
        if no in skip:
            continue
        if not line:
            out.problems.append(Problem("blank_line", "warning", "blank line (PaddleX rejects it; imgfeat skips it)",
                                        name, no))
            continue
        if line != raw and "\t" not in line:
            padded.append(no)
        parsed = _parse_line(line, name, no)
        (out.entries if isinstance(parsed, Entry) else out.problems).append(parsed)  # type: ignore[arg-type]
    if padded:
        out.problems.append(Problem("surrounding_spaces", "warning", f"spaces or tabs before or after the text on "
                                    f"{textio.line_list(padded)}: imgfeat ignores them, PaddleX's check rejects "
                                    "such lines",
                                    name, padded[0]))
    return out


def class_count_problems(entries: Sequence[Entry], name: str) -> List[Problem]:
    """Train labels are class ids and the classifier gets ``max + 1`` outputs: absurd ids (2e9, EAN
    codes) are an error before they cost a 4 GB allocation; very sparse ids a warning. Gaps are fine."""
    if not entries:
        return []
    top = max(entries, key=lambda e: e.label)
    classes, distinct = top.label + 1, len({e.label for e in entries})
    if classes > MAX_CLASSES:
        big = [e.line for e in entries if e.label >= MAX_CLASSES]
        return [Problem("label_out_of_range", "error", f"label {top.label} would make a {classes}-class classifier "
                        f"(limit {MAX_CLASSES}; {textio.line_list(big)}): train labels are class ids, "
                        "renumber them 0..N-1", name, big[0])]
    if classes > SPARSE_CLASSES and classes > 10 * distinct:
        return [Problem("sparse_labels", "warning", f"{distinct} distinct labels up to {top.label}: training sizes its "
                        f"classifier to {classes} classes; renumbering them 0..{distinct - 1} saves memory",
                        name, top.line)]
    return []


def read_list(root: Path, split: str) -> ListFile:
    """Parse ``<root>/<split>.txt``, first completing an update of the list files that a crash
    interrupted (see :mod:`imgfeat_cli.common.filetxn`), so no reader sees half a switch."""
    path = root / f"{split}.txt"
    name = f"{split}.txt"
    if root.is_dir():
        filetxn.recover(root)
    if not path.is_file():
        lf = ListFile(name, exists=False)
        why = "is not a file" if path.exists() else "not found"
        lf.problems.append(Problem("missing_list_file", "error", f"{name} {why} in {root}", name))
        return lf
    try:
        data = path.read_bytes()
    except OSError as exc:
        lf = ListFile(name)
        lf.problems.append(Problem("unreadable_list_file", "error", f"cannot read {name}: {exc.strerror or exc}", name))
        return lf
    lf = parse_list_text(textio.decode(data), name)
    if split == "train":
        lf.problems.extend(class_count_problems(lf.entries, name))
    return lf


def write_lists(root: Path, parts: Dict[str, Sequence[Entry]], extra: Optional[Dict[str, str]] = None,
                keep_backup: bool = True) -> List[Path]:
    """Write ``<split>.txt`` for every split in ``parts`` (plus ``extra`` files, e.g. ``label.txt``)
    all together or not at all; the previous set is kept as ``.bak``. Returns the backups."""
    with filetxn.FileSet(root, keep_backup) as files:
        for split, entries in parts.items():
            files.stage_text(f"{split}.txt", "".join(e.text() + "\n" for e in entries))
        for name, text in (extra or {}).items():
            files.stage_text(name, text)
        return files.commit()


def image_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be read as an image file (``"does not exist"``, ``"is a symlink loop"``...),
    or ``None`` when it is a regular file. Never raises for a hostile name."""
    return paths.not_a_file(path, "an image file")


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
