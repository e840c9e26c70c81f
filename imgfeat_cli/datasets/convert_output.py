"""What every converter shares once it knows its images and their classes: vetting ``--out``,
dropping images that do not decode or are listed twice, the stratified seeded split, and writing
the ShiTuRecDataset (list files and ``label.txt``) in place or into a separate folder.

In place, the list files and ``label.txt`` change together through
:func:`imgfeat_cli.datasets.dataset.write_lists` (previous set kept as ``.bak``). With ``--out``, the
whole dataset (images hard-linked, or copied across file systems, under ``images/``) is assembled in
a temp folder beside ``OUT`` and renamed into place, so Ctrl-C, a full disk or an error leaves no
half-made ``OUT``; an existing non-empty ``OUT`` is replaced only with ``--overwrite`` (kept as
``OUT.bak``). Paths that a list line cannot carry (spaces, control characters, bytes that are not
UTF-8) are renamed under ``--out`` and refused in place.
"""
from __future__ import annotations

import contextlib
import filecmp
import os
import shutil
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from imgfeat_cli.common import filetxn, folders, fsutil, paths
from imgfeat_cli.common.errors import DatasetError, ImageDecodeError, UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.common.system import cpu_count
from imgfeat_cli.datasets.dataset import SPACE_RULE, SPLITS, UNLISTABLE, Entry, Problem, allocate, write_lists
from imgfeat_cli.imaging.decode import decode_image


@dataclass
class Item:
    """One image to list: the file to read and link, its path under the root as the user wrote or
    laid it out (``None``: outside the root, LabelMe only), its class name, and where it came from
    (for messages)."""

    src: Path
    rel: Optional[str]
    label: str
    origin: str


@dataclass
class ConvertResult:
    dataset_path: str
    layout: str
    classes: List[str]
    counts: Dict[str, int]
    skipped: List[Problem] = field(default_factory=list)
    backups: List[str] = field(default_factory=list)
    notes: List[Problem] = field(default_factory=list)
    source_format: str = "labelme"

    def to_dict(self) -> Dict[str, object]:
        return {"dataset_path": self.dataset_path, "format": self.source_format, "layout": self.layout,
                "classes": self.classes, "counts": self.counts, "skipped": [p.to_dict() for p in self.skipped],
                "backups": self.backups, "notes": [p.to_dict() for p in self.notes]}


def decode_name(name: str) -> Tuple[str, Optional[str]]:
    """A file or folder name as text: names that are not UTF-8 (held as surrogate escapes) are read as
    GBK, as PaddleX reads such text, else with U+FFFD for the bad bytes; the second value says which."""
    raw = os.fsencode(name)
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("gbk"), "GBK"
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), "UTF-8 with the bad bytes replaced"


def shown(path: str) -> str:
    """A path as messages show it: bytes that are not UTF-8 as ``\\xNN``, control characters escaped
    (a JSON document and a one-line warning must hold it)."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def class_order(names: Sequence[str]) -> List[str]:
    """Class names in id order: numbers numerically (``2`` before ``10``, so folders named by class
    id keep their id), then the rest as text."""
    return sorted(set(names), key=lambda n: (0, int(n), n) if n.isascii() and n.isdigit() else (1, 0, n))


def _listable(rel: str) -> bool:
    return not any(c in UNLISTABLE or unicodedata.category(c) in ("Cc", "Cs") for c in rel)


def _clean(rel: str) -> str:
    """``rel`` with every character a list line cannot carry replaced by ``_`` (names that are not
    UTF-8 are decoded first)."""
    parts = [decode_name(p)[0] for p in rel.split("/")]
    return "/".join("".join(c if _listable(c) else "_" for c in p) for p in parts)


def _same_file(a: Path, b: Path) -> bool:
    """Same file, or the same bytes (size first, then content)."""
    try:
        return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def listed_in_place(items: Sequence[Item], root: Path) -> List[str]:
    """The paths to list when the dataset is written into its own root; refuses (nothing written)
    images outside it and paths a list line cannot carry."""
    outside = [it for it in items if it.rel is None]
    if outside:
        raise DatasetError(f"image {outside[0].src} lies outside {root}",
                           hint="use --out to build a self-contained copy")
    bad = [it.rel for it in items if not _listable(it.rel or "")]
    if bad:
        raise UsageError(f"{len(bad)} images have spaces, control characters or bytes that are not UTF-8 in their "
                         f"paths (e.g. {shown(bad[0] or '')!r}): {SPACE_RULE}, so they cannot be listed in place; "
                         "nothing was changed",
                         hint="pass --out DIR (the images are linked there under names with '_' for such characters), "
                              "or rename them")
    return [it.rel or "" for it in items]


def plan_names(items: Sequence[Item], notes: List[Problem]) -> List[str]:
    """Paths under ``images/`` in a separate output folder: characters a list line cannot carry become
    ``_``, and two different images that would share a name get distinct ones (identical bytes share
    one file)."""
    taken: Dict[str, Path] = {}
    rels = []
    for it in items:
        rel = it.rel if it.rel is not None else it.src.name
        rel = "images/" + (rel[len("images/"):] if rel.startswith("images/") else rel)
        wanted = _clean(rel)
        stem, dot, ext = wanted.rpartition(".") if "." in wanted.rsplit("/", 1)[-1] else (wanted, "", "")
        cand, n = wanted, 1
        while cand in taken and not _same_file(taken[cand], it.src):
            n += 1
            cand = f"{stem}_{n}{dot}{ext}"
        taken.setdefault(cand, it.src)
        if cand != rel:
            why = "another image has the same name" if cand != wanted else "list paths cannot hold such characters"
            notes.append(Problem("renamed_image", "info", f"{it.origin} is listed as {cand} ({why})", None))
        rels.append(cand)
    return rels


def drop_repeats(items: Sequence[Item], skipped: List[Problem]) -> List[Item]:
    """One item per image file: a file reached twice with one class is kept once (info), with
    different classes it is left out (a warning naming both)."""
    by_src: Dict[Path, List[Item]] = {}
    for it in items:
        by_src.setdefault(it.src, []).append(it)
    kept = []
    for group in by_src.values():
        labels = sorted({it.label for it in group})
        if len(labels) > 1:
            skipped.append(Problem("conflicting_labels", "warning", f"{group[0].origin} and {group[1].origin} are the "
                                   f"same image with different classes ({', '.join(map(repr, labels[:4]))}); left out",
                                   None))
            continue
        if len(group) > 1:
            skipped.append(Problem("duplicate_entry", "info", f"{group[1].origin} repeats {group[0].origin}; listed "
                                   "once", None))
        kept.append(group[0])
    return kept


def _decode_error(path: Path) -> Optional[str]:
    try:
        decode_image(path)
        return None
    except ImageDecodeError as exc:  # "<path>: <reason>"
        prefix = f"{os.fsdecode(path)}: "
        return exc.message[len(prefix):] if exc.message.startswith(prefix) else exc.message


def drop_undecodable(items: Sequence[Item], skipped: List[Problem], progress: ProgressFn = null_progress) -> List[Item]:
    """Decode every image (on all cores) as ``train`` and ``embed`` will; those that fail are
    reported and left out."""
    kept, total = [], len(items)
    progress("Decoding images", 0, total)
    pool = ThreadPoolExecutor(max_workers=cpu_count())
    try:
        for i, (it, why) in enumerate(zip(items, pool.map(_decode_error, [it.src for it in items])), start=1):
            if why is None:
                kept.append(it)
            else:
                skipped.append(Problem("undecodable_image", "warning", f"{it.origin}: {why}; left out", None))
            if i % 64 == 0 or i == total:
                progress("Decoding images", i, total)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: do not decode the rest first
    return kept


def check_destination(dest: Path, root: Path, inputs: Sequence[Path], overwrite: bool, forbid_inside: bool) -> None:
    """Refuse, before any work, an ``--out`` that is a file or not writable, one that holds files
    without ``--overwrite``, one whose replacement would move an input away (it holds the root or
    the list), and, for class folders (``forbid_inside``), one inside the root (it would be read as a
    class the next time)."""
    paths.check_output_dir(dest)
    real = Path(os.path.realpath(dest))
    if real == Path(os.path.realpath(root)):
        return
    for what in inputs:
        if real in Path(os.path.realpath(what)).parents:
            raise UsageError(f"--out {dest} holds the input {what}", hint="choose a folder outside the input")
    if forbid_inside and Path(os.path.realpath(root)) in real.parents:
        raise UsageError(f"--out {dest} is inside the class folders' root {root}: the next conversion would read "
                         "it as a class", hint="choose a folder outside it")
    with contextlib.suppress(OSError):
        if dest.is_dir() and any(dest.iterdir()) and not overwrite:
            raise UsageError(f"output folder {dest} exists and is not empty",
                             hint="choose another --out or pass --overwrite (the old folder is kept as .bak)")


@contextlib.contextmanager
def _new_folder(dest: Path) -> Iterator[Path]:
    """A temp folder that becomes ``dest`` on success; on failure nothing is left (not even the
    parent folders this created). One writer at a time: a lock on the parent folder (no lock file)."""
    made = [p for p in [dest.parent, *dest.parent.parents] if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with filetxn.folder_lock(dest.parent, wait=False):
            if dest.is_dir() and any(dest.iterdir()):  # --overwrite, checked before the work started
                with folders.replace_dir(dest) as tmp:
                    yield tmp
                return
            tmp = fsutil.temp_dir(dest)
            try:
                yield tmp
                with folders.deferred_interrupt():
                    os.replace(tmp, dest)  # rename(2) replaces an empty folder
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except BaseException:
        for p in made:
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def _place(src: Path, dst: Path) -> None:
    """Hard-link (cheap, same bytes) or copy ``src`` to ``dst``; identical bytes already there are kept."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if _same_file(src, dst):
            return
        raise DatasetError(f"{dst} already exists with different content", hint="choose an empty --out folder")
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _split_notes(parts: Sequence[Sequence[Tuple[str, int]]], classes: Sequence[str],
                 percents: Tuple[float, float, float], skipped: List[Problem], notes: List[Problem]) -> None:
    seen = [Counter(lab for _, lab in part) for part in parts]
    no_query = [c for c in range(len(classes)) if not seen[2][c]]
    train_only = [c for c in no_query if not seen[1][c]]
    if no_query:
        shown = ", ".join(repr(classes[c]) for c in no_query[:5]) + (" ..." if len(no_query) > 5 else "")
        notes.append(Problem("small_classes", "info", f"{len(no_query)} of {len(classes)} classes have too few images "
                             f"for the {'/'.join(f'{p:g}' for p in percents)} split to reach query ({shown}); "
                             f"{len(train_only)} of them are in train only: they train the model but are not "
                             "evaluated", None))
    for split, counted in zip(SPLITS[1:], seen[1:]):
        if not counted:
            skipped.append(Problem("empty_split", "warning",
                                   f"{split}.txt is empty: no class has enough images (a class needs 2+ images to "
                                   "reach gallery and query); `imgfeat check` will fail", f"{split}.txt"))


def write_dataset(root: Path, dest: Path, items: Sequence[Item], classes: Sequence[str],
                  percents: Tuple[float, float, float], seed: int, skipped: List[Problem], notes: List[Problem],
                  progress: ProgressFn = null_progress) -> Tuple[Dict[str, int], List[str]]:
    """Split ``items`` (stratified, seeded) and write the dataset into ``dest`` (``root`` itself: in
    place); return the counts per split and the backups made."""
    class_id = {n: i for i, n in enumerate(classes)}
    in_place = os.path.realpath(dest) == os.path.realpath(root)
    rels = listed_in_place(items, root) if in_place else plan_names(items, notes)
    rows = [(rel, class_id[it.label]) for rel, it in zip(rels, items)]
    parts = allocate(rows, [r[1] for r in rows], percents, seed, stratify=True)
    _split_notes(parts, classes, percents, skipped, notes)
    lists = {split: [Entry(p, lab) for p, lab in sorted(part)] for split, part in zip(SPLITS, parts)}
    extra = {"label.txt": "".join(f"{n}\n" for n in classes)}
    counts = {s: len(p) for s, p in zip(SPLITS, parts)}
    if in_place:
        return counts, [str(b) for b in write_lists(dest, lists, extra)]
    dest = Path(os.path.abspath(dest))  # so that "--out ." has a name (and a .bak beside it)
    replaced = dest.is_dir() and any(dest.iterdir())
    with _new_folder(dest) as tmp:
        for i, (it, rel) in enumerate(zip(items, rels), start=1):
            _place(it.src, tmp / rel)
            if i % 256 == 0 or i == len(items):
                progress("Linking images", i, len(items))
        write_lists(tmp, lists, extra, keep_backup=False)
    return counts, [str(dest.with_name(dest.name + ".bak"))] if replaced else []
