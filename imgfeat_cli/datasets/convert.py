"""``convert``: LabelMe classification annotations -> ShiTuRecDataset.

Two layouts are accepted:

* PaddleX demo: ``<root>/images/``, ``<root>/annotations/*.json``, ``<root>/label.txt``;
* labelme's own: ``x.json`` beside ``x.jpg`` (any depth), classes in ``flags.txt`` where
  ``__ignore__`` is not a class.

Each image takes the one flag set to true. Unlike upstream (which emits one line per true flag, so
multi-flag images appear twice, and slices unshuffled), images with zero or several true flags are
reported and skipped, and the split is deterministic and stratified (see
:func:`imgfeat_cli.datasets.dataset.allocate`). Existing list files are kept as ``.bak``.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from imgfeat_cli.common import fsutil
from imgfeat_cli.datasets.dataset import SPLITS, Entry, Problem, allocate, validate_percents, write_list
from imgfeat_cli.common.errors import DatasetError, UsageError
from imgfeat_cli.pipeline.decode import IMAGE_EXTENSIONS

IGNORE_FLAG = "__ignore__"


@dataclass
class ConvertResult:
    dataset_path: str
    layout: str
    classes: List[str]
    counts: Dict[str, int]
    skipped: List[Problem] = field(default_factory=list)
    backups: List[str] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return {"dataset_path": self.dataset_path, "layout": self.layout, "classes": self.classes,
                "counts": self.counts, "skipped": [p.to_dict() for p in self.skipped], "backups": self.backups}


def _read_names(path: Path) -> List[str]:
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.strip()
        if name and name != IGNORE_FLAG and name not in names:
            names.append(name)
    return names


def detect_layout(root: Path) -> Tuple[str, List[Path], Optional[Path]]:
    """Return (layout name, annotation files, class-list file or None)."""
    ann_dir = root / "annotations"
    if ann_dir.is_dir():
        files = sorted(ann_dir.rglob("*.json"))
        label = root / "label.txt"
        return "paddlex", files, (label if label.is_file() else None)
    files = sorted(p for p in root.rglob("*.json") if not p.name.startswith("."))
    for cand in ("flags.txt", "label.txt", "labels.txt"):
        if (root / cand).is_file():
            return "labelme", files, root / cand
    return "labelme", files, None


def _image_for(ann: Path, data: dict) -> Optional[Path]:
    rel = data.get("imagePath")
    if isinstance(rel, str) and rel:
        cand = (ann.parent / rel.replace("\\", "/")).resolve()
        if cand.is_file():
            return cand
    for ext in sorted(IMAGE_EXTENSIONS):  # imagePath missing or stale: an image with the same stem
        for e in (ext, ext.upper()):
            cand = ann.with_suffix(e)
            if cand.is_file():
                return cand.resolve()
    return None


def run_convert(dataset_dir: str, out_dir: Optional[str] = None, percents: Tuple[float, float, float] = (50, 30, 20),
                seed: int = 0) -> ConvertResult:
    """Convert the LabelMe dataset at ``dataset_dir``; write the ShiTuRecDataset to ``out_dir``
    (default: in place). When ``out_dir`` differs, images are hard-linked (or copied) into
    ``out_dir/images/`` so the result is self-contained."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise UsageError(f"dataset folder {dataset_dir} does not exist", hint="pass the LabelMe folder with --dataset")
    why = validate_percents(*percents)
    if why:
        raise UsageError(f"bad split percentages: {why}", hint="e.g. -o CheckDataset.split.train_percent=60")
    layout, anns, names_file = detect_layout(root)
    if not anns:
        raise DatasetError(f"no LabelMe .json annotations found under {root}",
                           hint="expected annotations/*.json (PaddleX demo) or x.json beside x.jpg (labelme)")
    classes = _read_names(names_file) if names_file else []
    fixed_classes = bool(classes)
    skipped: List[Problem] = []
    picked: List[Tuple[Path, str]] = []
    for ann in anns:
        rel_ann = ann.relative_to(root).as_posix()
        try:
            data = json.loads(ann.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            skipped.append(Problem("bad_json", "warning", f"not valid JSON: {exc}", rel_ann))
            continue
        if not isinstance(data, dict) or not isinstance(data.get("flags", {}), dict):
            skipped.append(Problem("bad_json", "warning", "not a LabelMe annotation (no flags mapping)", rel_ann))
            continue
        flags = data.get("flags") or {}
        if flags.get(IGNORE_FLAG):
            skipped.append(Problem("ignored", "info", "marked __ignore__", rel_ann))
            continue
        true = [k for k, v in flags.items() if v is True and k != IGNORE_FLAG]
        if len(true) != 1:
            what = "no flag set to true" if not true else f"several flags set to true ({', '.join(true)})"
            skipped.append(Problem("ambiguous_flags" if true else "no_flag", "warning", f"{what}; skipped", rel_ann))
            continue
        name = true[0]
        if fixed_classes and name not in classes:
            skipped.append(Problem("unknown_class", "warning",
                                   f"class {name!r} is not in {names_file.name if names_file else ''}; skipped", rel_ann))
            continue
        image = _image_for(ann, data)
        if image is None:
            skipped.append(Problem("missing_image", "warning", f"image {data.get('imagePath')!r} not found", rel_ann))
            continue
        picked.append((image, name))
    if not fixed_classes:
        classes = sorted({n for _, n in picked})
    if not picked:
        raise DatasetError(f"no usable annotation in {root} ({len(skipped)} skipped)",
                           hint="each image needs exactly one flag set to true")
    class_id = {n: i for i, n in enumerate(classes)}

    dest = Path(out_dir) if out_dir else root
    dest.mkdir(parents=True, exist_ok=True)
    same_root = dest.resolve() == root.resolve()
    rows: List[Tuple[str, int]] = []
    for image, name in picked:
        inside = _inside(image, root)
        rel = image.relative_to(root.resolve()).as_posix() if inside else image.name
        if not same_root:
            rel = "images/" + (rel[len("images/"):] if rel.startswith("images/") else rel)
            _place(image, dest / rel)
        elif not inside:
            raise DatasetError(f"image {image} lies outside {root}", hint="use --out to build a self-contained copy")
        rows.append((rel, class_id[name]))
    parts = allocate(rows, [r[1] for r in rows], percents, seed, stratify=True)
    backups = []
    for split, part in zip(SPLITS, parts):
        bak = write_list(dest, split, [Entry(p, lab) for p, lab in sorted(part)])
        if bak:
            backups.append(str(bak))
    names_text = "".join(f"{n}\n" for n in classes)
    label_file = dest / "label.txt"
    if not label_file.is_file() or label_file.read_text(encoding="utf-8") != names_text:
        bak = fsutil.write_text(label_file, names_text, keep_backup=True)
        if bak:
            backups.append(str(bak))
    counts = {s: len(p) for s, p in zip(SPLITS, parts)}
    for split in ("gallery", "query"):
        if not counts[split]:
            skipped.append(Problem("empty_split", "warning",
                                   f"{split}.txt is empty: no class has enough images (a class needs 2+ images to "
                                   "reach gallery and query); `imgfeat check` will fail", f"{split}.txt"))
    return ConvertResult(str(dest), layout, classes, counts, skipped, backups)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _place(src: Path, dst: Path) -> None:
    """Hard-link (cheap, same bytes) or copy ``src`` to ``dst``; never overwrite a different file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if dst.stat().st_size == src.stat().st_size:
            return
        raise DatasetError(f"{dst} already exists with different content", hint="choose an empty --out folder")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
