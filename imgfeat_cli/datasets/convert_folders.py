"""``convert --from folders``: class sub-folders (``photos/<class>/*.jpg``) -> the images of a
ShiTuRecDataset, each labelled with its class folder's name.

Decisions (documented in docs/datasets.md):

* Each folder directly under the root is a class; images in folders nested deeper belong to their
  top-level class folder (as torchvision's ImageFolder reads them), and that is reported.
* Class ids follow the folder names, numbers numerically (folders ``0``..``212`` keep their id).
  A name that is not UTF-8 is read as GBK (else with U+FFFD) and reported; a name holding a line
  break cannot go into ``label.txt`` and the folder is left out.
* Images are the files with an image extension (:data:`IMAGE_EXTENSIONS`, any case); other files
  are counted and reported once; hidden entries (``.DS_Store``, ``.git``) are passed over. Files
  directly in the root are not in a class and are left out (images among them are named).
* Empty class folders, FIFOs, devices, sockets, broken symlinks, symlink loops, unreadable folders
  and symlinks leading out of the root (``path_escapes_root``) are reported and left out, never
  followed or opened; a folder reached twice through symlinks is read once.
"""
from __future__ import annotations

import errno
import os
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Set

from imgfeat_cli.datasets.convert_output import Item, decode_name, shown
from imgfeat_cli.datasets.dataset import SPLITS, Problem
from imgfeat_cli.datasets.rootpath import ESCAPES, escape_reason, real_root
from imgfeat_cli.imaging.decode import is_image_path

#: How many examples a summary note names (the rest are counted).
EXAMPLES = 3


@dataclass
class _Walk:
    root: Path
    root_real: str
    skipped: List[Problem]
    seen: Set[str] = field(default_factory=set)  # real folders already read (symlink loops, aliases)
    other_files: List[str] = field(default_factory=list)
    nested: List[str] = field(default_factory=list)


def _stat(path: Path, rel: str, walk: _Walk) -> Optional[os.stat_result]:
    """``os.stat`` following symlinks; a broken link, a loop or an unreadable entry is reported."""
    try:
        return os.stat(path)
    except OSError as exc:
        why = {errno.ELOOP: "is a symlink loop", errno.ENOENT: "is a broken symlink"}.get(
            exc.errno or 0, f"cannot be read: {exc.strerror or exc}")
        walk.skipped.append(Problem("unreadable_entry", "warning", f"{shown(rel)} {why}; left out", None))
        return None


def _entries(folder: Path, rel: str, walk: _Walk) -> List[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        walk.skipped.append(Problem("unreadable_entry", "warning", f"folder {shown(rel) or '.'} cannot be read: "
                                    f"{exc.strerror or exc}; left out", None))
        return []


def _enter(path: Path, rel: str, walk: _Walk) -> bool:
    """Whether to read folder ``path``: inside the root once symlinks are followed, and not read before."""
    why = escape_reason(walk.root_real, path)
    if why:
        walk.skipped.append(Problem(ESCAPES, "warning", f"folder {shown(rel)} {why}; left out", None))
        return False
    real = os.path.realpath(path)
    if real in walk.seen:
        walk.skipped.append(Problem("repeated_folder", "warning", f"folder {shown(rel)} leads to a folder already read "
                                    f"({shown(real)}: a symlink loop or a second name); read once", None))
        return False
    walk.seen.add(real)
    return True


def _images(top: Path, top_rel: str, label: str, walk: _Walk) -> List[Item]:
    """The images under class folder ``top`` (at any depth: an explicit stack, so a hostile depth
    cannot exhaust Python's recursion limit), labelled ``label``."""
    found: List[Item] = []
    stack = [(top, top_rel, 0)]
    while stack:
        folder, rel, depth = stack.pop()
        for entry in _entries(folder, rel, walk):
            path, sub = Path(entry.path), f"{rel}/{entry.name}"
            st = _stat(path, sub, walk)
            if st is None:
                continue
            if stat.S_ISDIR(st.st_mode):
                if _enter(path, sub, walk):
                    stack.append((path, sub, depth + 1))
            elif not stat.S_ISREG(st.st_mode):
                walk.skipped.append(Problem("not_a_file", "warning", f"{shown(sub)} is not a regular file (a FIFO, "
                                            "device or socket); left out", None))
            elif not is_image_path(entry.name):
                walk.other_files.append(shown(sub))
            elif (why := escape_reason(walk.root_real, path)) is not None:
                walk.skipped.append(Problem(ESCAPES, "warning", f"{shown(sub)} {why}; left out", None))
            else:
                found.append(Item(Path(os.path.realpath(path)), sub, label, shown(sub)))
                if depth:
                    walk.nested.append(shown(sub))
    return found


def _class_name(entry_name: str, notes: List[Problem], skipped: List[Problem]) -> Optional[str]:
    name, encoding = decode_name(entry_name)
    if "\n" in name or "\r" in name:
        skipped.append(Problem("bad_class_name", "warning", f"folder {shown(entry_name)} has a line break in its "
                               "name, which label.txt cannot hold; rename it. Left out", None))
        return None
    if encoding:
        notes.append(Problem("name_not_utf8", "info", f"folder name {shown(entry_name)} is not UTF-8; read as "
                             f"{encoding}: class {name!r}", None))
    return name


def scan_class_folders(root: Path, skipped: List[Problem], notes: List[Problem]) -> List[Item]:
    """Every image under ``root``'s class folders, labelled with its class name; everything left
    out goes to ``skipped`` (warnings), everything worth knowing to ``notes``."""
    walk = _Walk(root, real_root(root), skipped, {real_root(root)})
    items: List[Item] = []
    loose: List[str] = []
    for entry in _entries(root, "", walk):
        path = Path(entry.path)
        st = _stat(path, entry.name, walk)
        if st is None:
            continue
        if not stat.S_ISDIR(st.st_mode):
            if stat.S_ISREG(st.st_mode) and is_image_path(entry.name):
                loose.append(shown(entry.name))
            elif not stat.S_ISREG(st.st_mode):
                skipped.append(Problem("not_a_file", "warning", f"{shown(entry.name)} is not a regular file or a "
                                       "folder (a FIFO, device or socket); left out", None))
            continue
        label = _class_name(entry.name, notes, skipped)
        if label is None or not _enter(path, entry.name, walk):
            continue
        found = _images(path, entry.name, label, walk)
        if not found:
            skipped.append(Problem("empty_class", "warning", f"class folder {shown(entry.name)} holds no images; "
                                   "not a class", None))
        items.extend(found)
    _summaries(walk, loose, notes, skipped)
    return items


def _examples(names: List[str]) -> str:
    return ", ".join(names[:EXAMPLES]) + (" ..." if len(names) > EXAMPLES else "")


def _summaries(walk: _Walk, loose: List[str], notes: List[Problem], skipped: List[Problem]) -> None:
    if loose:
        skipped.append(Problem("not_in_class_folder", "warning", f"{len(loose)} images lie directly in the root, not "
                               f"in a class folder ({_examples(loose)}); left out", None))
    if walk.other_files:
        notes.append(Problem("not_an_image", "info", f"{len(walk.other_files)} files without an image extension "
                             f"were passed over ({_examples(walk.other_files)})", None))
    if walk.nested:
        notes.append(Problem("nested_folder", "info", f"{len(walk.nested)} images in nested folders take their "
                             f"top-level class folder's name ({_examples(walk.nested)})", None))


def looks_like_class_folders(root: Path) -> bool:
    """A folder without list files whose sub-folders hold images: what ``check`` points at ``convert``."""
    if any((root / f"{s}.txt").exists() for s in SPLITS):
        return False
    try:
        subdirs = [e for e in os.scandir(root) if not e.name.startswith(".") and e.is_dir()]
        for sub in subdirs[:20]:
            with os.scandir(sub.path) as it:
                if any(e.is_file() and is_image_path(e.name) for e in it):
                    return True
    except OSError:
        return False
    return False


def class_folder_problems(root: Path) -> List[Problem]:
    """``check`` on class folders: one error saying which command makes a dataset of them."""
    if not looks_like_class_folders(root):
        return []
    shown = shlex.quote(str(root).rstrip("/") or "/")
    return [Problem("class_folders", "error", f"{shown} holds class folders, not a dataset: make one with `imgfeat "
                    f"convert --from folders {shown} --out DS`, then check DS", None)]

