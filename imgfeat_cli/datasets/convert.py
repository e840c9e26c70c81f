"""``convert``: LabelMe classification annotations -> ShiTuRecDataset.

Two layouts are accepted:

* PaddleX demo: ``<root>/images/``, ``<root>/annotations/*.json``, ``<root>/label.txt``;
* labelme's own: ``x.json`` beside ``x.jpg`` (any depth), classes in ``flags.txt`` where
  ``__ignore__`` is not a class.

Each image takes the one flag set to true. Unlike upstream (which emits one line per true flag, so
multi-flag images appear twice, and slices unshuffled), images with zero or several true flags are
reported and skipped, and the split is deterministic and stratified (see
:func:`imgfeat_cli.datasets.dataset.allocate`). The list files and ``label.txt`` are written together
(all or none); the previous set is kept as ``.bak``.

Paths with spaces cannot be listed (PaddleX splits list lines on spaces): with ``--out`` such images
are linked under names with ``_`` for each space; in place, convert refuses before writing anything.
With ``--out``, two different images that would land on one name (same file name from different
folders) get distinct names (``x_2.jpg``); identical bytes share one. ``flags.txt``/``label.txt`` and
the JSON files are read as PaddleX reads them (UTF-8, else GBK, which is reported; a BOM is ignored).
"""
from __future__ import annotations

import filecmp
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import DatasetError, UsageError
from imgfeat_cli.datasets import textio
from imgfeat_cli.datasets.dataset import (SPACE_RULE, SPLITS, UNLISTABLE, Entry, Problem, allocate, resolve_inside,
                                          unlistable, validate_percents, write_lists)
from imgfeat_cli.imaging.decode import IMAGE_EXTENSIONS

IGNORE_FLAG = "__ignore__"


@dataclass
class ConvertResult:
    dataset_path: str
    layout: str
    classes: List[str]
    counts: Dict[str, int]
    skipped: List[Problem] = field(default_factory=list)
    backups: List[str] = field(default_factory=list)
    notes: List[Problem] = field(default_factory=list)

    def to_dict(self) -> Dict[str, object]:
        return {"dataset_path": self.dataset_path, "layout": self.layout, "classes": self.classes,
                "counts": self.counts, "skipped": [p.to_dict() for p in self.skipped], "backups": self.backups,
                "notes": [p.to_dict() for p in self.notes]}


def _decode(path: Path, rel: str) -> Tuple[Optional[str], Optional[Problem]]:
    """Text of ``path`` read as PaddleX reads it (``None`` when it is not UTF-8 or GBK), and what to
    say about its encoding."""
    dec = textio.read_decoded(path, allow_gbk=True)
    if dec.bad_byte is not None:
        return None, Problem("not_utf8", "warning", f"{dec.describe_bad()} (nor GBK); re-save it as UTF-8", rel,
                             dec.bad_line)
    if dec.encoding != "utf-8":
        return dec.text, Problem("read_as_gbk", "warning", "not UTF-8; read as GBK, as PaddleX does (re-save it as "
                                 "UTF-8 to be sure the text is right)", rel)
    return dec.text, None


def _read_names(path: Path, notes: List[Problem]) -> List[str]:
    text, note = _decode(path, path.name)
    if text is None:
        raise DatasetError(f"{path}: {note.message if note else ''}", hint="class names must be UTF-8 (or GBK) text")
    if note:
        notes.append(note)
    names = []
    for line in textio.Decoded(text).lines():
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


class EscapesRoot(Exception):
    """An annotation's ``imagePath`` leaves the dataset folder."""


def _image_for(ann: Path, data: dict, root: Path) -> Optional[Path]:
    """The image an annotation names (its ``imagePath``, relative to the annotation's folder, and
    never outside ``root``: :class:`EscapesRoot`, as ``check``'s ``path_escapes_root``), or one
    beside it with the same stem when the path is missing or stale."""
    rel = data.get("imagePath")
    if isinstance(rel, str) and rel:
        inside = resolve_inside(root, f"{ann.parent.relative_to(root).as_posix()}/{rel.replace(chr(92), '/')}")
        if inside is None or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
            raise EscapesRoot(rel)
        cand = inside.resolve()
        if cand.is_file():
            return cand
    for ext in sorted(IMAGE_EXTENSIONS):  # imagePath missing or stale: an image with the same stem
        for e in (ext, ext.upper()):
            cand = ann.with_suffix(e)
            if cand.is_file():
                return cand.resolve()
    return None


def _collect(root: Path, anns: List[Path], classes: List[str], names_file: Optional[Path],
             skipped: List[Problem], notes: List[Problem]) -> List[Tuple[Path, str]]:
    """(image, class name) for every annotation with exactly one true flag; the rest go to ``skipped``."""
    picked: List[Tuple[Path, str]] = []
    for ann in anns:
        rel_ann = ann.relative_to(root).as_posix()
        try:
            text, note = _decode(ann, rel_ann)
        except DatasetError as exc:
            skipped.append(Problem("unreadable", "warning", exc.message, rel_ann))
            continue
        if note:
            (notes if text is not None else skipped).append(note)
        if text is None:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            skipped.append(Problem("bad_json", "warning", f"not valid JSON: {exc.msg} (line {exc.lineno}, column "
                                   f"{exc.colno})", rel_ann, exc.lineno))
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
        if classes and name not in classes:
            skipped.append(Problem("unknown_class", "warning",
                                   f"class {name!r} is not in {names_file.name if names_file else ''}; skipped", rel_ann))
            continue
        try:
            image = _image_for(ann, data, root)
        except EscapesRoot as exc:
            skipped.append(Problem("path_escapes_root", "warning", f"imagePath {str(exc)!r} is absolute or points "
                                   "outside the dataset folder; skipped", rel_ann))
            continue
        if image is None:
            skipped.append(Problem("missing_image", "warning", f"image {data.get('imagePath')!r} not found", rel_ann))
            continue
        picked.append((image, name))
    return picked


def _listed_paths_in_place(picked: List[Tuple[Path, str]], root: Path) -> List[str]:
    """Paths relative to ``root``; images outside it or with spaces cannot be listed in place."""
    rels = []
    for image, _ in picked:
        if not _inside(image, root):
            raise DatasetError(f"image {image} lies outside {root}", hint="use --out to build a self-contained copy")
        rels.append(image.resolve().relative_to(root.resolve()).as_posix())
    spaced = [r for r in rels if unlistable(r)]
    if spaced:
        raise UsageError(f"{len(spaced)} images have spaces in their paths (e.g. {spaced[0]!r}): {SPACE_RULE}, so "
                         "they cannot be listed in place; nothing was changed",
                         hint="pass --out DIR (the images are linked there under names with '_' for spaces), "
                              "or rename them")
    return rels


def _plan_copies(picked: List[Tuple[Path, str]], root: Path, notes: List[Problem]) -> List[str]:
    """Paths under ``images/`` in a separate output folder: spaces become ``_``, and two different
    images that would share a name get distinct ones (identical bytes share one file)."""
    taken: Dict[str, Path] = {}
    rels = []
    for image, _ in picked:
        inside = _inside(image, root)
        rel = image.resolve().relative_to(root.resolve()).as_posix() if inside else image.name
        rel = "images/" + (rel[len("images/"):] if rel.startswith("images/") else rel)
        wanted = "".join("_" if c in UNLISTABLE else c for c in rel)
        stem, dot, ext = wanted.rpartition(".") if "." in wanted.rsplit("/", 1)[-1] else (wanted, "", "")
        cand, n = wanted, 1
        while cand in taken and not _same_file(taken[cand], image):
            n += 1
            cand = f"{stem}_{n}{dot}{ext}"
        taken.setdefault(cand, image)
        if cand != rel:
            why = "another image has the same name" if cand != wanted else "list paths cannot hold spaces"
            notes.append(Problem("renamed_image", "info", f"{image} is listed as {cand} ({why})", None))
        rels.append(cand)
    return rels


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
    dest = fsutil.check_output_dir(out_dir or root)
    layout, anns, names_file = detect_layout(root)
    if not anns:
        raise DatasetError(f"no LabelMe .json annotations found under {root}",
                           hint="expected annotations/*.json (PaddleX demo) or x.json beside x.jpg (labelme)")
    skipped: List[Problem] = []
    notes: List[Problem] = []
    classes = _read_names(names_file, notes) if names_file else []
    picked = _collect(root, anns, classes, names_file, skipped, notes)
    if not classes:
        classes = sorted({n for _, n in picked})
    if not picked:
        raise DatasetError(f"no usable annotation in {root} ({len(skipped)} skipped)",
                           hint="each image needs exactly one flag set to true")
    class_id = {n: i for i, n in enumerate(classes)}
    same_root = dest.resolve() == root.resolve()
    rels = _listed_paths_in_place(picked, root) if same_root else _plan_copies(picked, root, notes)
    if not same_root:
        for (image, _), rel in zip(picked, rels):
            _place(image, dest / rel)
    rows = [(rel, class_id[name]) for rel, (_, name) in zip(rels, picked)]
    parts = allocate(rows, [r[1] for r in rows], percents, seed, stratify=True)
    backups = write_lists(dest, {split: [Entry(p, lab) for p, lab in sorted(part)] for split, part in zip(SPLITS, parts)},
                          {"label.txt": "".join(f"{n}\n" for n in classes)})
    counts = {s: len(p) for s, p in zip(SPLITS, parts)}
    for split in ("gallery", "query"):
        if not counts[split]:
            skipped.append(Problem("empty_split", "warning",
                                   f"{split}.txt is empty: no class has enough images (a class needs 2+ images to "
                                   "reach gallery and query); `imgfeat check` will fail", f"{split}.txt"))
    return ConvertResult(str(dest), layout, classes, counts, skipped, [str(b) for b in backups], notes)


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _same_file(a: Path, b: Path) -> bool:
    """Same file, or the same bytes (size first, then content)."""
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def _place(src: Path, dst: Path) -> None:
    """Hard-link (cheap, same bytes) or copy ``src`` to ``dst``; never overwrite a different file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if _same_file(src, dst):
            return
        raise DatasetError(f"{dst} already exists with different content", hint="choose an empty --out folder")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
