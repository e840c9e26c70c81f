"""``convert --from list``: a ``path<TAB or space>label`` file (PaddleX's gallery list, such as the
drink demo's ``drink_label.txt``) -> the images of a ShiTuRecDataset.

* A line splits once (:func:`imgfeat_cli.datasets.textio.split_labelled`): at its first tab when it
  has one (paths may hold spaces), else at its first space (labels may hold spaces). Labels are
  class names (any text); class ids follow them, numbers numerically, so integer labels 0..N-1
  keep their id.
* Paths are relative to the list's folder, or to ``--root``; an absolute path must lie inside that
  root. ``..`` leaving it, absolute paths elsewhere and symlinks out of it are refused
  (``path_escapes_root``), listed paths missing on disk (or folders, FIFOs, symlink loops) are
  reported, and so are lines without a label; all of them are left out, with ``file:line``.
* The file is read as PaddleX reads text: UTF-8 (a BOM is dropped, CRLF endings are fine), else
  GBK, which is reported; lines that are neither are reported with their line number and left out.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

from imgfeat_cli.common import paths
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.datasets import textio
from imgfeat_cli.datasets.convert_output import Item
from imgfeat_cli.datasets.dataset import Problem, image_problem
from imgfeat_cli.datasets.rootpath import ESCAPES, listed_path, real_root


def list_root(list_file: Path, root: Optional[str]) -> Path:
    """The folder listed paths are relative to: ``--root``, else the list's own folder."""
    why = paths.not_a_file(list_file, "a list file")
    if why:
        hint = ("for class sub-folders use --from folders DIR" if list_file.is_dir()
                else "give a text file of 'path label' lines")
        raise UsageError(f"list file {list_file} {why}", hint=hint)
    base = Path(root) if root else (list_file.parent if str(list_file.parent) else Path("."))
    if not base.is_dir():
        raise UsageError(f"--root {root} is not a folder", hint="give the folder the listed paths are relative to")
    return base


def _read(list_file: Path, notes: List[Problem], skipped: List[Problem]) -> textio.Decoded:
    data = list_file.read_bytes()
    if b"\x00" in data:
        raise UsageError(f"{list_file} is not a text file (it holds NUL bytes)",
                         hint="a list has one 'path label' line per image")
    dec = textio.decode(data, allow_gbk=True)
    name = list_file.name
    if dec.bad_lines:
        skipped.append(Problem("not_utf8", "warning", f"{dec.describe_bad()} (nor GBK) on "
                               f"{textio.line_list(dec.bad_lines)}; those lines are left out (re-save the file as "
                               "UTF-8)", name, dec.bad_line))
    elif dec.encoding != "utf-8":
        notes.append(Problem("read_as_gbk", "warning", "not UTF-8; read as GBK, as PaddleX does (re-save it as UTF-8 "
                             "to be sure the text is right)", name))
    if dec.bom:
        notes.append(Problem("bom", "info", "starts with a UTF-8 byte-order mark (ignored)", name, 1))
    return dec


def read_labelled_list(list_file: Path, root: Path, skipped: List[Problem], notes: List[Problem]) -> List[Item]:
    """Every usable ``path label`` line of ``list_file`` as an item; the rest go to ``skipped``."""
    dec = _read(list_file, notes, skipped)
    name, root_real, bad = list_file.name, real_root(root), set(dec.bad_lines or ())
    items: List[Item] = []
    for no, line in enumerate(dec.lines(), start=1):
        if no in bad or not line.strip():
            continue
        where = f"{name}:{no}"
        item, problem = _item(root, root_real, line, where)
        if problem:
            skipped.append(Problem(problem[0], "warning", f"{problem[1]}; left out", name, no))
        else:
            items.append(item)  # type: ignore[arg-type]
    return items


def _item(root: Path, root_real: str, line: str, where: str) -> Tuple[Optional[Item], Optional[Tuple[str, str]]]:
    text, label = textio.split_labelled(line)
    if not text or not label:
        return None, ("malformed_line", f"expected '<path> <label>' (tab or space separated), got {line[:100]!r}")
    full, why, rel = listed_path(root, root_real, text)
    if full is None:
        return None, (ESCAPES, f"{text[:100]!r} {why}")
    missing = image_problem(full)
    if missing:
        return None, ("missing_image", f"{text[:100]!r} {missing}")
    return Item(Path(os.path.realpath(full)), rel, label, f"{where} ({rel})"), None
