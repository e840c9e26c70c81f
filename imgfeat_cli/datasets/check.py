"""``check``: validate a ShiTuRecDataset and report everything that is wrong with it.

Upstream stops at the first problem; here every problem is collected (code, severity, file, line)
so a user fixes a dataset in one pass. Error-severity problems fail the check (exit 3); warnings
flag things that still run but skew training or metrics (leakage into train, duplicates, single-image
classes, unscorable queries, imbalance).
"""
from __future__ import annotations

import hashlib
import random
import statistics
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from imgfeat_cli.common import filetxn, fsutil
from imgfeat_cli.datasets.convert_folders import class_folder_problems
from imgfeat_cli.datasets.dataset import SPLITS, Entry, Problem, image_problem, read_list, resolve_inside
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.imaging.decode import extension_matches, probe_bytes
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.common.system import cpu_count

RESULT_FILE = "check_dataset_result.json"


@dataclass
class ImageStatus:
    error: Optional[str]
    fmt: Optional[str]
    size: Optional[Tuple[int, int]]
    digest: Optional[str]


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


def run_check(dataset_dir: str, output_dir: str = "output", num_workers: Optional[int] = None,
              demo_samples: int = 10, imbalance_ratio: float = 50.0, write_outputs: bool = True,
              progress: ProgressFn = null_progress, near_duplicates: Optional[Any] = None) -> CheckResult:
    """Validate the dataset at ``dataset_dir``; write the report under ``output_dir``.
    ``near_duplicates``: a :class:`~imgfeat_cli.datasets.neardup.NearDupOptions` to look for them."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise UsageError(f"dataset folder {dataset_dir} does not exist or is not a folder",
                         hint="pass the folder that holds train.txt, gallery.txt and query.txt")
    problems: List[Problem] = [Problem("repaired_update", "info", f"{name} completed: an update of the list files "
                                       "was interrupted (the new set is in place, the old one in .bak)", name)
                               for name in filetxn.recover(root)]
    problems.extend(class_folder_problems(root))  # photos/<class>/*.jpg: say which command makes a dataset
    splits: Dict[str, List[Entry]] = {}
    for split in SPLITS:
        lf = read_list(root, split)
        problems.extend(lf.problems)
        splits[split] = lf.entries
        if lf.exists and not lf.entries and not any(p.severity == "error" for p in lf.problems):
            problems.append(Problem("empty_split", "error", f"{split}.txt lists no images", lf.name))

    # Resolve paths; decode every distinct file once, in parallel (Pillow releases the GIL).
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
    status: Dict[Path, ImageStatus] = {}
    files = list(todo)
    progress("Decoding images", 0, len(files))
    with ThreadPoolExecutor(max_workers=num_workers or cpu_count()) as pool:
        for i, (path, st) in enumerate(zip(files, pool.map(_probe, files)), start=1):
            status[path] = st
            if i % 16 == 0 or i == len(files):
                progress("Decoding images", i, len(files))

    for split, entries in splits.items():
        for e in entries:
            full = resolved[(split, e.line)]
            st = status.get(full) if full is not None else None
            if st is None:
                continue
            if st.error:
                problems.append(Problem("undecodable_image", "error", f"{e.path}: {st.error}", f"{split}.txt", e.line))
            elif not extension_matches(full, st.fmt):
                problems.append(Problem("extension_mismatch", "info",
                                        f"{e.path} holds {st.fmt} data despite its extension (readable, but misleading)",
                                        f"{split}.txt", e.line))

    problems.extend(_cross_split_problems(splits, resolved, status, imbalance_ratio))
    if near_duplicates is not None:
        from imgfeat_cli.datasets.neardup import find_near_duplicates

        decoded = {path: st.digest for path, st in status.items() if st.error is None}
        problems.extend(find_near_duplicates(splits, resolved, decoded, near_duplicates, progress))

    class_stats: Dict[str, Dict[str, Any]] = {}
    per_class: Dict[str, Dict[str, int]] = {}
    for split, entries in splits.items():
        class_stats[split], per_class[split] = _class_stats(entries)
    rank = {"error": 0, "warning": 1, "info": 2}
    problems.sort(key=lambda p: (rank[p.severity], p.file or "", p.line or 0))
    result = CheckResult(str(root), output_dir, splits, problems, class_stats, per_class)
    if write_outputs:
        _write_outputs(result, root, resolved, status, demo_samples)
    return result


def _cross_split_problems(splits: Dict[str, List[Entry]], resolved: Dict[Tuple[str, int], Optional[Path]],
                          status: Dict[Path, ImageStatus], imbalance_ratio: float) -> List[Problem]:
    problems: List[Problem] = []
    where: Dict[Path, Dict[str, List[Entry]]] = defaultdict(lambda: defaultdict(list))
    for split, entries in splits.items():
        for e in entries:
            full = resolved.get((split, e.line))
            if full is not None:
                where[full][split].append(e)
    for full, by_split in where.items():
        for split, es in by_split.items():
            if len(es) > 1:
                labels = sorted({e.label for e in es})
                lines = ", ".join(str(e.line) for e in es)
                if len(labels) > 1:
                    problems.append(Problem("conflicting_labels", "error",
                                            f"{es[0].path} is listed with different labels {labels} (lines {lines})",
                                            f"{split}.txt", es[1].line))
                else:
                    problems.append(Problem("duplicate_entry", "warning",
                                            f"{es[0].path} is listed {len(es)} times (lines {lines})",
                                            f"{split}.txt", es[1].line))
        if "gallery" in by_split and "query" in by_split:
            e = by_split["query"][0]
            problems.append(Problem("gallery_query_leak", "error",
                                    f"{e.path} is in both gallery and query; it would match itself",
                                    "query.txt", e.line))
        if "train" in by_split and len(by_split) > 1:
            other = "query" if "query" in by_split else "gallery"
            e = by_split[other][0]
            problems.append(Problem("train_overlap", "warning", f"{e.path} is in train and {other}; metrics will be optimistic",
                                    f"{other}.txt", e.line))
    # Same bytes under different paths across gallery/query: a softer leak.
    digests: Dict[str, Dict[str, str]] = defaultdict(dict)
    for split in ("gallery", "query"):
        for e in splits.get(split, []):
            full = resolved.get((split, e.line))
            st = status.get(full) if full is not None else None
            if st is not None and st.digest:
                digests[st.digest].setdefault(split, e.path)
    for d, by in digests.items():
        if len(by) == 2 and by["gallery"] != by["query"]:
            problems.append(Problem("duplicate_content", "warning",
                                    f"query image {by['query']} has the same bytes as gallery image {by['gallery']}",
                                    "query.txt"))
    problems.extend(_unscorable_queries(splits))
    for split in ("train", "gallery"):
        counts = Counter(e.label for e in splits.get(split, []))
        singles = sorted(k for k, v in counts.items() if v == 1)
        if split == "train" and singles:
            problems.append(Problem("single_image_class", "warning",
                                    f"{len(singles)} train classes have a single image (no positive pair for metric "
                                    f"learning): {', '.join(map(str, singles[:10]))}{' ...' if len(singles) > 10 else ''}",
                                    "train.txt"))
        if len(counts) > 1:
            hi, lo = max(counts.values()), min(counts.values())
            if hi / lo > imbalance_ratio:
                problems.append(Problem("class_imbalance", "warning",
                                        f"largest {split} class has {hi} images, smallest {lo} "
                                        f"(ratio {hi / lo:.0f} > {imbalance_ratio:g})", f"{split}.txt"))
    return problems


def _unscorable_queries(splits: Dict[str, List[Entry]]) -> List[Problem]:
    """One problem per query whose label has no gallery image (``query.txt:LINE``): it cannot be
    scored. An error when no query can be scored at all."""
    gallery_labels = {e.label for e in splits.get("gallery", [])}
    query = splits.get("query", [])
    lost = [e for e in query if e.label not in gallery_labels]
    if not gallery_labels or not lost:
        return []
    sev = "error" if len(lost) == len(query) else "warning"
    return [Problem("query_label_not_in_gallery", sev, f"label {e.label} has no gallery image, so this query cannot "
                    f"be scored ({len(lost)} of {len(query)} queries)", "query.txt", e.line) for e in lost]


def _write_outputs(result: CheckResult, root: Path, resolved: Dict[Tuple[str, int], Optional[Path]],
                   status: Dict[Path, ImageStatus], demo_samples: int) -> None:
    from imgfeat_cli.datasets import report  # matplotlib/Pillow drawing, only when writing

    out = Path(result.output_dir)
    demo_dir = out / "check_dataset" / "demo_img"
    demo_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for split, entries in result.splits.items():
        good = [e for e in entries
                if (p := resolved.get((split, e.line))) is not None and p in status and status[p].error is None]
        picks = sorted(rng.sample(good, min(demo_samples, len(good))), key=lambda e: e.line)
        paths = []
        for i, e in enumerate(picks):
            name = f"{split}_{i:02d}_{Path(e.path).stem[:40]}.jpg"
            report.draw_labelled(resolved[(split, e.line)], e.label, demo_dir / name)  # type: ignore[arg-type]
            paths.append(f"check_dataset/demo_img/{name}")
        result.sample_paths[split] = paths
    result.histogram = "check_dataset/histogram.png"
    report.draw_histogram(result.class_stats, result.images_per_class, out / result.histogram)
    fsutil.write_json(out / RESULT_FILE, result.to_dict())
