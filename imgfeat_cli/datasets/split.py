"""``split``: re-split a ShiTuRecDataset's pooled lines into train/gallery/query.

Upstream shuffles without a seed (not reproducible: a quirk). Here the pooled, de-duplicated lines
are allocated with a seed (default 0, so reruns give identical files) and, by default, stratified
by label so each class keeps the proportions and queries keep a gallery match. Nothing is touched
until every list file has parsed; then the three files are replaced together or not at all (a
failure at any point leaves the complete old set, or a switch the next read completes), and the
previous set is kept as ``<name>.txt.bak``. Upstream renames the old files away first and loses
lines when a later write fails (a quirk).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

from imgfeat_cli.datasets.dataset import (SPLITS, Entry, allocate, class_count_problems, read_list,
                                          validate_percents, write_lists)
from imgfeat_cli.common import paths
from imgfeat_cli.common.errors import DatasetError, UsageError


@dataclass
class SplitResult:
    dataset_path: str
    pooled: int
    duplicates_removed: int
    counts: Dict[str, int]
    backups: List[str]
    seed: int
    stratified: bool

    def to_dict(self) -> Dict[str, object]:
        return dict(self.__dict__)


def run_split(dataset_dir: str, percents: Tuple[float, float, float], seed: int = 0,
              stratify: bool = True) -> SplitResult:
    root = Path(dataset_dir)
    why = validate_percents(*percents)
    if why:
        raise UsageError(f"bad split percentages: {why}; nothing was changed",
                         hint="e.g. --train 60 --gallery 25 --query 15")
    if not root.is_dir():
        raise UsageError(f"dataset folder {dataset_dir} does not exist or is not a folder",
                         hint="pass the dataset root with --dataset")
    paths.check_output_dir(root)  # the list files are rewritten in place
    pooled: List[Entry] = []
    found = 0
    for split in SPLITS:
        lf = read_list(root, split)
        if not lf.exists:
            continue
        found += 1
        # every line may land in train.txt, where labels are class ids: vet them all as train labels
        extra = class_count_problems(lf.entries, lf.name) if split != "train" else []
        bad = [p for p in lf.problems + extra if p.severity == "error"]
        if bad:
            p = bad[0]
            raise DatasetError(f"{root / p.file}:{p.line}: {p.message}; nothing was changed"
                               if p.line else f"{root / (p.file or '')}: {p.message}; nothing was changed",
                               hint="fix the line (see `imgfeat check`) and rerun")
        pooled.extend(lf.entries)
    if not found:
        raise DatasetError(f"no train.txt, gallery.txt or query.txt in {root}",
                           hint="split re-divides existing list files; create them with `imgfeat convert`")
    unique: Dict[str, Entry] = {}
    for e in pooled:
        unique.setdefault(e.text(), Entry(e.path, e.label))
    items = list(unique.values())
    parts = allocate(items, [e.label for e in items], percents, seed, stratify)
    backups = write_lists(root, {split: sorted(part, key=lambda e: (e.path, e.label))
                                 for split, part in zip(SPLITS, parts)})
    return SplitResult(str(root), len(pooled), len(pooled) - len(items),
                       {s: len(p) for s, p in zip(SPLITS, parts)}, [str(b) for b in backups], seed, stratify)
