"""``convert``: LabelMe classification flags, class sub-folders or a ``path label`` list ->
ShiTuRecDataset; this module reads LabelMe and holds the one entry point, :func:`run_convert`.

LabelMe: two layouts are accepted:

* PaddleX demo: ``<root>/images/``, ``<root>/annotations/*.json``, ``<root>/label.txt``;
* labelme's own: ``x.json`` beside ``x.jpg`` (any depth), classes in ``flags.txt`` where
  ``__ignore__`` is not a class.

Each image takes the one flag set to true. Unlike upstream (which emits one line per true flag, so
multi-flag images appear twice, and slices unshuffled), images with zero or several true flags are
reported and skipped. ``flags.txt``/``label.txt`` and the JSON files are read as PaddleX reads them
(UTF-8, else GBK, which is reported; a BOM is ignored).

Class folders: :mod:`imgfeat_cli.datasets.convert_folders`; lists:
:mod:`imgfeat_cli.datasets.convert_list`. Whatever the source, images that do not decode are
reported and left out, the split is deterministic and stratified
(:func:`imgfeat_cli.datasets.dataset.allocate`), and the dataset is written as
:mod:`imgfeat_cli.datasets.convert_output` describes (in place, or a separate ``--out`` folder with
the images hard-linked, assembled beside it and renamed into place).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

from imgfeat_cli.common.errors import DatasetError, UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.datasets import textio
from imgfeat_cli.datasets.convert_folders import scan_class_folders
from imgfeat_cli.datasets.convert_list import list_root, read_labelled_list
from imgfeat_cli.datasets.convert_output import (ConvertResult, Item, check_destination, class_order, drop_repeats,
                                                 drop_undecodable, shown, write_dataset)
from imgfeat_cli.datasets.dataset import Problem, resolve_inside, validate_percents
from imgfeat_cli.imaging.decode import IMAGE_EXTENSIONS

IGNORE_FLAG = "__ignore__"
#: Source formats, the first the default (``imgfeat convert --from``).
FORMATS = ("labelme", "folders", "list")


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


def _labelme_items(root: Path, skipped: List[Problem], notes: List[Problem]) -> Tuple[List[Item], List[str], str]:
    """The LabelMe images with their class, the classes in id order (the names file's, else sorted),
    and the layout found."""
    layout, anns, names_file = detect_layout(root)
    if not anns:
        raise DatasetError(f"no LabelMe .json annotations found under {root}",
                           hint="expected annotations/*.json (PaddleX demo) or x.json beside x.jpg (labelme); for "
                                "class sub-folders use --from folders, for a 'path label' list --from list")
    classes = _read_names(names_file, notes) if names_file else []
    picked = _collect(root, anns, classes, names_file, skipped, notes)
    if not picked:
        raise DatasetError(f"no usable annotation in {root} ({len(skipped)} skipped)",
                           hint="each image needs exactly one flag set to true")
    real = root.resolve()
    items = [Item(image, image.resolve().relative_to(real).as_posix() if real in image.resolve().parents else None,
                  name, shown(str(image))) for image, name in picked]
    return items, classes or sorted({n for _, n in picked}), layout


def _source_root(fmt: str, source: str, root: Optional[str]) -> Tuple[Path, List[Path]]:
    """The folder the dataset's paths are relative to, and the inputs ``--out`` must not swallow."""
    if fmt == "list":
        base = list_root(Path(source), root)
        return base, [base, Path(source)]
    path = Path(source)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        hint = ("for a 'path label' list use --from list FILE" if path.is_file()
                else "pass the folder of class sub-folders" if fmt == "folders" else "pass the LabelMe folder")
        raise UsageError(f"{'dataset' if fmt == 'labelme' else 'source'} folder {source} {what}", hint=hint)
    return path, [path]


def run_convert(source: str, out_dir: Optional[str] = None, percents: Tuple[float, float, float] = (50, 30, 20),
                seed: int = 0, fmt: Optional[str] = None, root: Optional[str] = None, overwrite: bool = False,
                progress: ProgressFn = null_progress) -> ConvertResult:
    """Convert ``source`` (a LabelMe folder, a folder of class sub-folders, or a list file whose paths
    are relative to ``root``, default its folder) into a ShiTuRecDataset in ``out_dir`` (default: in
    place, the source folder). ``fmt`` is one of :data:`FORMATS` (default the first). Everything is
    checked before anything is written."""
    fmt = fmt or FORMATS[0]
    if fmt not in FORMATS:
        raise UsageError(f"--from {fmt!r} is not supported", hint=f"use one of {', '.join(FORMATS)}")
    why = validate_percents(*percents)
    if why:
        raise UsageError(f"bad split percentages: {why}", hint="e.g. -o CheckDataset.split.train_percent=60")
    base, inputs = _source_root(fmt, source, root)
    dest = Path(out_dir) if out_dir else base
    check_destination(dest, base, inputs, overwrite, forbid_inside=fmt == "folders")
    skipped: List[Problem] = []
    notes: List[Problem] = []
    classes: List[str] = []
    if fmt == "labelme":
        items, classes, layout = _labelme_items(base, skipped, notes)
    elif fmt == "folders":
        items, layout = scan_class_folders(base, skipped, notes), "class folders"
    else:
        items, layout = read_labelled_list(Path(source), base, skipped, notes), "path label list"
    items = drop_undecodable(drop_repeats(items, skipped), skipped, progress)
    if not items:
        first = f": {len(skipped)} left out, e.g. {skipped[0].message}" if skipped else ""
        raise DatasetError(f"no usable image in {source}{first}",
                           hint="expected DIR/<class>/<image> for --from folders, 'path label' lines for --from list")
    classes = classes or class_order([it.label for it in items])
    counts, backups = write_dataset(base, dest, items, classes, percents, seed, skipped, notes, progress)
    return ConvertResult(str(dest), layout, classes, counts, skipped, backups, notes, fmt)

