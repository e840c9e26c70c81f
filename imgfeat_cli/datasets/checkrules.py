"""The rules ``check`` applies once every list is read and every image decoded: one function per
rule, each taking the :class:`Scan` and returning its problems in a stable order.

Per-entry rules (a path leaving the root, a missing or undecodable image, a misleading extension)
run while the images are located and decoded, in :mod:`imgfeat_cli.datasets.check`; the rules here
look across entries, splits and classes (:data:`RULES`, applied in that order).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from imgfeat_cli.datasets.dataset import Entry, Problem


@dataclass
class ImageStatus:
    """One decoded file: why it cannot be used (``None``: it can), its format, size and digest."""

    error: Optional[str]
    fmt: Optional[str]
    size: Optional[Tuple[int, int]]
    digest: Optional[str]


@dataclass
class Scan:
    """What the phases of ``check`` found, handed to every rule."""

    root: Path
    splits: Dict[str, List[Entry]]
    resolved: Dict[Tuple[str, int], Optional[Path]]  # (split, line) -> the file, None when outside the root
    status: Dict[Path, ImageStatus]
    imbalance_ratio: float

    @cached_property
    def by_path(self) -> Dict[Path, Dict[str, List[Entry]]]:
        """Every located file with the entries that list it, per split (in list order)."""
        where: Dict[Path, Dict[str, List[Entry]]] = defaultdict(lambda: defaultdict(list))
        for split, entries in self.splits.items():
            for e in entries:
                full = self.resolved.get((split, e.line))
                if full is not None:
                    where[full][split].append(e)
        return where


def listed_twice(scan: Scan) -> List[Problem]:
    """``conflicting_labels`` (error) / ``duplicate_entry`` (warning): a file listed twice in one split."""
    problems = []
    for by_split in scan.by_path.values():
        for split, es in by_split.items():
            if len(es) < 2:
                continue
            labels = sorted({e.label for e in es})
            lines = ", ".join(str(e.line) for e in es)
            if len(labels) > 1:
                problems.append(Problem("conflicting_labels", "error", f"{es[0].path} is listed with different "
                                        f"labels {labels} (lines {lines})", f"{split}.txt", es[1].line))
            else:
                problems.append(Problem("duplicate_entry", "warning", f"{es[0].path} is listed {len(es)} times "
                                        f"(lines {lines})", f"{split}.txt", es[1].line))
    return problems


def gallery_query_leak(scan: Scan) -> List[Problem]:
    """``gallery_query_leak`` (error): a file in both gallery and query would match itself."""
    return [Problem("gallery_query_leak", "error", f"{e.path} is in both gallery and query; it would match itself",
                    "query.txt", e.line)
            for by_split in scan.by_path.values() if "gallery" in by_split and "query" in by_split
            for e in by_split["query"][:1]]


def train_overlap(scan: Scan) -> List[Problem]:
    """``train_overlap`` (warning): a training image also evaluated on makes metrics optimistic."""
    problems = []
    for by_split in scan.by_path.values():
        if "train" in by_split and len(by_split) > 1:
            other = "query" if "query" in by_split else "gallery"
            e = by_split[other][0]
            problems.append(Problem("train_overlap", "warning", f"{e.path} is in train and {other}; metrics will "
                                    "be optimistic", f"{other}.txt", e.line))
    return problems


def duplicate_content(scan: Scan) -> List[Problem]:
    """``duplicate_content`` (warning): the same bytes under different paths in gallery and query."""
    digests: Dict[str, Dict[str, str]] = defaultdict(dict)
    for split in ("gallery", "query"):
        for e in scan.splits.get(split, []):
            full = scan.resolved.get((split, e.line))
            st = scan.status.get(full) if full is not None else None
            if st is not None and st.digest:
                digests[st.digest].setdefault(split, e.path)
    return [Problem("duplicate_content", "warning", f"query image {by['query']} has the same bytes as gallery "
                    f"image {by['gallery']}", "query.txt")
            for by in digests.values() if len(by) == 2 and by["gallery"] != by["query"]]


def unscorable_queries(scan: Scan) -> List[Problem]:
    """``query_label_not_in_gallery``: one per query whose label has no gallery image (it cannot be
    scored); an error when no query can be scored at all, else a warning."""
    gallery_labels = {e.label for e in scan.splits.get("gallery", [])}
    query = scan.splits.get("query", [])
    lost = [e for e in query if e.label not in gallery_labels]
    if not gallery_labels or not lost:
        return []
    sev = "error" if len(lost) == len(query) else "warning"
    return [Problem("query_label_not_in_gallery", sev, f"label {e.label} has no gallery image, so this query cannot "
                    f"be scored ({len(lost)} of {len(query)} queries)", "query.txt", e.line) for e in lost]


def single_image_classes(scan: Scan) -> List[Problem]:
    """``single_image_class`` (warning): train classes with one image give metric learning no pair."""
    counts = Counter(e.label for e in scan.splits.get("train", []))
    singles = sorted(k for k, v in counts.items() if v == 1)
    if not singles:
        return []
    shown = ", ".join(map(str, singles[:10])) + (" ..." if len(singles) > 10 else "")
    return [Problem("single_image_class", "warning", f"{len(singles)} train classes have a single image (no "
                    f"positive pair for metric learning): {shown}", "train.txt")]


def class_imbalance(scan: Scan) -> List[Problem]:
    """``class_imbalance`` (warning): largest / smallest class above ``CheckDataset.imbalance_ratio``."""
    problems = []
    for split in ("train", "gallery"):
        counts = Counter(e.label for e in scan.splits.get(split, []))
        if len(counts) > 1:
            hi, lo = max(counts.values()), min(counts.values())
            if hi / lo > scan.imbalance_ratio:
                problems.append(Problem("class_imbalance", "warning", f"largest {split} class has {hi} images, "
                                        f"smallest {lo} (ratio {hi / lo:.0f} > {scan.imbalance_ratio:g})",
                                        f"{split}.txt"))
    return problems


Rule = Callable[[Scan], List[Problem]]
#: The cross-entry rules, in the order their problems are listed (before sorting by severity).
RULES: Sequence[Rule] = (listed_twice, gallery_query_leak, train_overlap, duplicate_content, unscorable_queries,
                         single_image_classes, class_imbalance)


def apply_rules(scan: Scan, rules: Sequence[Rule] = RULES) -> List[Problem]:
    return [p for rule in rules for p in rule(scan)]


def entries_with(scan: Scan, split: str, ok: Callable[[Any], bool]) -> List[Entry]:
    """The entries of ``split`` whose decoded file passes ``ok`` (demo images are drawn from these)."""
    out = []
    for e in scan.splits.get(split, []):
        full = scan.resolved.get((split, e.line))
        if full is not None and full in scan.status and ok(scan.status[full]):
            out.append(e)
    return out
