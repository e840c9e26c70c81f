"""``check``: validate a ShiTuRecDataset and report everything that is wrong with it.

Upstream stops at the first problem; here every problem is collected (code, severity, file, line)
so a user fixes a dataset in one pass. Error-severity problems fail the check (exit 3); warnings
flag things that still run but skew training or metrics (leakage into train, duplicates, single-image
classes, unscorable queries, imbalance).

:func:`run_check` runs in phases: the root (a folder holding none of the list files is not a
dataset: refused, nothing written), the list files, locating each listed image (inside the root,
a regular file), decoding each distinct file once in parallel, the per-image rules, the cross-entry
rules of :mod:`imgfeat_cli.datasets.checkrules` (one function per rule), the statistics, and the
report.
"""
from __future__ import annotations

import hashlib
import os
import random
import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from imgfeat_cli.common import filetxn, fsutil
from imgfeat_cli.datasets.convert_folders import class_folder_problems
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.common.system import cpu_count, usable_threads
from imgfeat_cli.datasets.checkrules import ImageStatus, Scan, apply_rules, entries_with
from imgfeat_cli.datasets.dataset import SPLITS, Entry, Problem, image_problem, read_list, resolve_inside
from imgfeat_cli.imaging.decode import extension_matches, probe_bytes

RESULT_FILE = "check_dataset_result.json"
#: Problems sort errors first, then warnings, then notes; by file and line within each.
SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}

__all__ = ["RESULT_FILE", "CheckResult", "ImageStatus", "run_check"]


@dataclass
class CheckResult:
    """Everything ``check`` learned; ``to_dict`` gives the upstream-shaped result document."""

    dataset_path: str
    output_dir: str
    splits: Dict[str, List[Entry]]
    problems: List[Problem]
    class_stats: Dict[str, Dict[str, Any]]
    images_per_class: Dict[str, Dict[str, int]]
    sample_paths: Dict[str, List[str]] = field(default_factory=dict)
    histogram: Optional[str] = None

    @property
    def check_pass(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def counts(self, severity: str) -> int:
        return sum(1 for p in self.problems if p.severity == severity)

    def to_dict(self) -> Dict[str, Any]:
        attrs: Dict[str, Any] = {}
        for s in SPLITS:
            attrs[f"{s}_samples"] = len(self.splits.get(s, []))
            attrs[f"{s}_sample_paths"] = self.sample_paths.get(s, [])
        return {
            "done_flag": True,
            "check_pass": self.check_pass,
            "attributes": attrs,
            "analysis": {"histogram": self.histogram, "class_stats": self.class_stats},
            "dataset_path": self.dataset_path,
            "show_type": "image",
            "dataset_type": "ShiTuRecDataset",
            "problems": [p.to_dict() for p in self.problems],
            "summary": {"errors": self.counts("error"), "warnings": self.counts("warning"),
                        "infos": self.counts("info")},
        }


def _probe(path: Path) -> ImageStatus:
    """Read the file once: decode it and hash the same bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageStatus(f"cannot read ({exc.strerror or exc})", None, None, None)
    err, fmt, size = probe_bytes(data)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest() if err is None else None
    return ImageStatus(err, fmt, size, digest)


def _class_stats(entries: List[Entry]) -> Tuple[Dict[str, Any], Dict[str, int]]:
    per = Counter(e.label for e in entries)
    sizes = list(per.values())
    stats: Dict[str, Any] = {"images": len(entries), "classes": len(per)}
    if sizes:
        stats.update(min_per_class=min(sizes), max_per_class=max(sizes),
                     mean_per_class=round(statistics.fmean(sizes), 3), median_per_class=statistics.median(sizes),
                     single_image_classes=sum(1 for s in sizes if s == 1))
    return stats, {str(k): v for k, v in sorted(per.items())}


def dataset_root(dataset_dir: str) -> Path:
    """Phase 0: the dataset folder, refused when it is none (missing, or holding none of the list
    files: ``check -d photos/`` on a folder of images must write no report about "3 errors")."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise UsageError(f"dataset folder {dataset_dir} does not exist or is not a folder",
                         hint="pass the folder that holds train.txt, gallery.txt and query.txt")
    names = [f"{split}.txt" for split in SPLITS]
    if not any(os.path.lexists(root / name) for name in names) and not (root / filetxn.JOURNAL).exists():
        for problem in class_folder_problems(root):  # photos/<class>/*.jpg: say which command makes a dataset
            raise UsageError(problem.message, hint="imgfeat convert makes a dataset of class folders, a 'path label' "
                             "list or LabelMe annotations")
        raise UsageError(f"{dataset_dir} is not a ShiTuRecDataset: it holds none of {', '.join(names)}",
                         hint="pass the dataset folder; its lists have one 'path label' line per image "
                              "(imgfeat convert makes them from LabelMe annotations)")
    return root


def read_lists(root: Path, problems: List[Problem]) -> Dict[str, List[Entry]]:
    """Phase 1: finish an interrupted update of the lists, then parse each list file."""
    problems.extend(Problem("repaired_update", "info", f"{name} completed: an update of the list files was "
                            "interrupted (the new set is in place, the old one in .bak)", name)
                    for name in filetxn.recover(root))
    splits: Dict[str, List[Entry]] = {}
    for split in SPLITS:
        lf = read_list(root, split)
        problems.extend(lf.problems)
        splits[split] = lf.entries
        if lf.exists and not lf.entries and not any(p.severity == "error" for p in lf.problems):
            problems.append(Problem("empty_split", "error", f"{split}.txt lists no images", lf.name))
    return splits


def locate_images(root: Path, splits: Dict[str, List[Entry]], problems: List[Problem], progress: ProgressFn
                  ) -> Tuple[Dict[Tuple[str, int], Optional[Path]], List[Path]]:
    """Phase 2: each entry's file, inside the root (``path_escapes_root``) and a regular file
    (``missing_image``): ``{(split, line): file}`` (``None`` for a path leaving the root) and the
    distinct regular files to decode, in list order."""
    resolved: Dict[Tuple[str, int], Optional[Path]] = {}
    todo: Dict[Path, None] = {}
    total, done = sum(len(v) for v in splits.values()), 0
    progress("Finding images", 0, total)
    for split, entries in splits.items():
        for e in entries:
            done += 1
            if done % 512 == 0 or done == total:
                progress("Finding images", done, total)
            full = resolve_inside(root, e.path)
            resolved[(split, e.line)] = full
            if full is None:
                problems.append(Problem("path_escapes_root", "error",
                                        f"{e.path} is absolute or points outside the dataset folder",
                                        f"{split}.txt", e.line))
            elif (why := image_problem(full)) is None:
                todo[full] = None
            else:
                shown = e.path if e.path.isprintable() else repr(e.path)
                problems.append(Problem("missing_image", "error", f"{shown} {why}", f"{split}.txt", e.line))
    return resolved, list(todo)


def decode_images(files: List[Path], num_workers: Optional[int], progress: ProgressFn) -> Dict[Path, ImageStatus]:
    """Phase 3: decode every distinct file once, in parallel (Pillow releases the GIL)."""
    status: Dict[Path, ImageStatus] = {}
    progress("Decoding images", 0, len(files))
    with ThreadPoolExecutor(max_workers=usable_threads(num_workers) or cpu_count()) as pool:
        for i, (path, st) in enumerate(zip(files, pool.map(_probe, files)), start=1):
            status[path] = st
            if i % 16 == 0 or i == len(files):
                progress("Decoding images", i, len(files))
    return status


def image_rules(scan: Scan) -> List[Problem]:
    """Phase 4: ``undecodable_image`` (error) and ``extension_mismatch`` (info) per entry."""
    problems = []
    for split, entries in scan.splits.items():
        for e in entries:
            full = scan.resolved[(split, e.line)]
            st = scan.status.get(full) if full is not None else None
            if st is None:
                continue
            if st.error:
                problems.append(Problem("undecodable_image", "error", f"{e.path}: {st.error}", f"{split}.txt", e.line))
            elif not extension_matches(full, st.fmt):
                problems.append(Problem("extension_mismatch", "info", f"{e.path} holds {st.fmt} data despite its "
                                        "extension (readable, but misleading)", f"{split}.txt", e.line))
    return problems


def run_check(dataset_dir: str, output_dir: str = "output", num_workers: Optional[int] = None,
              demo_samples: int = 10, imbalance_ratio: float = 50.0, write_outputs: bool = True,
              progress: ProgressFn = null_progress, near_duplicates: Optional[Any] = None) -> CheckResult:
    """Validate the dataset at ``dataset_dir`` (the phases of the module docstring); write the
    report under ``output_dir``. ``near_duplicates``: a
    :class:`~imgfeat_cli.datasets.neardup.NearDupOptions` to look for them too."""
    root = dataset_root(dataset_dir)
    problems: List[Problem] = []
    splits = read_lists(root, problems)
    resolved, files = locate_images(root, splits, problems, progress)
    status = decode_images(files, num_workers, progress)
    scan = Scan(root, splits, resolved, status, imbalance_ratio)
    problems.extend(image_rules(scan))
    problems.extend(apply_rules(scan))
    if near_duplicates is not None:
        from imgfeat_cli.datasets.neardup import find_near_duplicates

        decoded = {path: st.digest for path, st in status.items() if st.error is None}
        problems.extend(find_near_duplicates(splits, resolved, decoded, near_duplicates, progress))
    class_stats: Dict[str, Dict[str, Any]] = {}
    per_class: Dict[str, Dict[str, int]] = {}
    for split, entries in splits.items():
        class_stats[split], per_class[split] = _class_stats(entries)
    problems.sort(key=lambda p: (SEVERITY_RANK[p.severity], p.file or "", p.line or 0))
    result = CheckResult(str(root), output_dir, splits, problems, class_stats, per_class)
    if write_outputs:
        _write_outputs(result, scan, demo_samples)
    return result


def _write_outputs(result: CheckResult, scan: Scan, demo_samples: int) -> None:
    """Phase 5: demo images, the histogram and the report file."""
    from imgfeat_cli.datasets import report  # matplotlib/Pillow drawing, only when writing

    out = Path(result.output_dir)
    demo_dir = out / "check_dataset" / "demo_img"
    demo_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for split in result.splits:
        good = entries_with(scan, split, lambda st: st.error is None)
        picks = sorted(rng.sample(good, min(demo_samples, len(good))), key=lambda e: e.line)
        paths = []
        for i, e in enumerate(picks):
            name = f"{split}_{i:02d}_{Path(e.path).stem[:40]}.jpg"
            report.draw_labelled(scan.resolved[(split, e.line)], e.label, demo_dir / name)  # type: ignore[arg-type]
            paths.append(f"check_dataset/demo_img/{name}")
        result.sample_paths[split] = paths
    result.histogram = "check_dataset/histogram.png"
    report.draw_histogram(result.class_stats, result.images_per_class, out / result.histogram)
    fsutil.write_json(out / RESULT_FILE, result.to_dict())
