"""Paths a user hands over, judged before any work: an input that must be a regular file
(:func:`not_a_file`), an output file or folder that must be creatable and writable
(:func:`check_output_file`, :func:`check_output_dir`), so a typo costs a one-line usage error
instead of an hour of embedding. Nothing here creates or changes anything."""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Optional, Union

from imgfeat_cli.common.errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]


def refuse_empty(**named: object) -> None:
    """An empty text given for a path option (``-g "$UNSET"``) is refused, named by its option: as a
    path it would mean the current folder, and for an optional file it would silently mean none."""
    for option, value in named.items():
        if isinstance(value, str) and not value.strip():
            raise UsageError(f"--{option.replace('_', '-')} is empty", hint="give a path (an unset shell variable?)")


def not_a_file(path: PathLike, what: str = "a file") -> Optional[str]:
    """Why ``path`` cannot be opened as an input file (``"does not exist"``, ``"is a symlink loop"``,
    ``"is a folder, not a file"``...), or ``None`` when it is a regular file. A FIFO is refused (its
    reader would block forever), and a hostile name (NUL byte, over-long) never raises."""
    try:
        st = os.stat(path)
    except ValueError:
        return "contains a NUL byte"
    except FileNotFoundError:
        return "is a broken symlink" if os.path.islink(path) else "does not exist"
    except OSError as exc:
        return {errno.ELOOP: "is a symlink loop", errno.ENAMETOOLONG: "has a name too long for the filesystem",
                errno.ENOTDIR: "does not exist (a file stands where a folder of its path should be)"}.get(
                    exc.errno or 0, f"cannot be reached: {exc.strerror or exc}")
    if stat.S_ISDIR(st.st_mode):
        return f"is a folder, not {what}"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a FIFO, device or socket)"
    return None


def _limit(folder: Path, name: str, default: int) -> int:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return int(os.pathconf(str(folder), name))
    return default


def _existing_ancestor(path: Path) -> Path:
    cur = path
    while not os.path.lexists(cur) and cur != cur.parent:
        cur = cur.parent
    return cur


def _check_names(path: Path, what: str) -> Path:
    """Refuse over-long paths and names (before any ``stat``, which fails on them); return the
    nearest existing ancestor of ``path``."""
    full = os.path.abspath(path)
    anc = _existing_ancestor(Path(full))
    path_max = _limit(anc, "PC_PATH_MAX", 4096)
    if len(os.fsencode(full)) >= path_max:
        raise UsageError(f"{what} path {str(path)[:60]}... is {len(os.fsencode(full))} bytes, longer than "
                         f"the system's {path_max}", hint="choose a shorter location")
    name_max = _limit(anc if anc.is_dir() else anc.parent, "PC_NAME_MAX", 255)
    for part in Path(full).relative_to(anc).parts:
        if len(os.fsencode(part)) > name_max:
            raise UsageError(f"cannot create {what} {str(path)[:60]}...: the name {part[:40]}... is longer "
                             f"than {name_max} bytes", hint="choose a shorter name")
    return anc


def _stat(path: Path, what: str) -> Optional[os.stat_result]:
    """``os.stat`` or ``None`` when nothing is there; a loop or a folder we may not enter is a usage error."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UsageError(f"cannot use {what} {path}: {exc.strerror or exc}",
                         hint="choose another location, or fix the folder's permissions") from None


def _check_writable_folder(folder: Path, path: Path, what: str) -> None:
    if not folder.is_dir():
        raise UsageError(f"cannot create {what} {path}: {folder} is a file, not a folder",
                         hint=f"choose a location under an existing folder, or move {folder} away")
    if not os.access(folder, os.W_OK | os.X_OK):
        where = f"{what} {path}" if folder == path else f"cannot write {what} {path}: folder {folder}"
        raise UsageError(f"{where} is not writable",
                         hint="choose a location you may write to, or fix the folder's permissions")


def check_output_file(path: PathLike, overwrite: Optional[bool] = None) -> Path:
    """Fail with a one-line usage error unless a file can be written at ``path`` (atomically, so its
    folder must be writable) and, with ``overwrite=False``, unless nothing is there yet (a user's
    file is replaced only when they say so). Creates nothing; returns ``path`` as a ``Path``."""
    p = Path(path)
    _check_names(p, "output file")
    st = _stat(p, "output file")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise UsageError(f"output {p} is a folder, but a file is expected",
                         hint=f"give a file name, e.g. {p / 'features.jsonl'}")
    if st is not None and overwrite is False:
        raise UsageError(f"{p} already exists", hint="pass --overwrite to replace it (once the new one is complete), "
                         "or choose another name")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"output {p} exists and is not a regular file (a FIFO or device?)",
                         hint="choose another file name")
    _check_writable_folder(p.parent if st is not None else _existing_ancestor(p.parent), p, "output file")
    return p


def check_output_dir(path: PathLike) -> Path:
    """Fail with a one-line usage error unless ``path`` is (or can be created as) a writable folder.
    Creates nothing; returns ``path`` as a ``Path``."""
    p = Path(path)
    _check_names(p, "output folder")
    st = _stat(p, "output folder")
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"output {p} is a file, but a folder is expected",
                         hint="choose a folder name, or move the file away")
    _check_writable_folder(p if st is not None else _existing_ancestor(p.parent), p, "output folder")
    return p
