"""Safe file writing: nothing the user had is lost or half-written, and permissions are what a user expects.

* Every file imgfeat writes goes through a temp file in the destination folder followed by
  ``os.replace`` (atomic within one filesystem). Rewriting a user's file can keep the previous
  version as ``<name>.bak`` first. Files that change together go through
  :class:`imgfeat_cli.common.filetxn.FileSet` instead.
* Permissions follow what a plain ``open(path, "w")`` / ``mkdir`` would give, not ``mkstemp``'s
  private 0600/0700: a new file gets ``0666 & ~umask``, a new folder ``0777 & ~umask``, and a
  replaced file keeps its own permission bits (as ``open`` on an existing file, ``sed -i`` and
  editors do; a user who made a list file group-readable keeps it so). :func:`temp_file` and
  :func:`temp_dir` are the one place temp files and folders are created.
* :func:`check_output_file` / :func:`check_output_dir` vet an output location before long work
  starts, so a typo costs a one-line usage error instead of an hour of embedding.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Tuple, Union

from imgfeat_cli.common.errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]

TMP_SUFFIX = ".tmp"
#: Bytes of the destination's name kept in a temp name, so a 255-byte name still has a temp twin.
_TMP_NAME_KEEP = 100


def current_umask() -> int:
    """The process umask. Read from /proc where possible: ``os.umask`` can only read it by setting
    it, which briefly changes it for every thread of the process."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(dest: PathLike) -> int:
    """Permission bits a plain ``open(dest, "w")`` would leave: the existing file's, else 0666 & ~umask."""
    with contextlib.suppress(OSError):
        st = os.stat(dest)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode) & 0o777
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Permission bits ``mkdir`` gives a new folder: 0777 & ~umask."""
    return 0o777 & ~current_umask()


def tmp_prefix(dest: Path) -> str:
    name = os.fsencode(dest.name)[:_TMP_NAME_KEEP].decode(errors="ignore") if dest.name else "tmp"
    return f".{name}."


def temp_file(dest: PathLike, suffix: str = TMP_SUFFIX, mode: Optional[int] = None) -> Tuple[int, Path]:
    """Create a temp file beside ``dest`` (to be renamed onto it); return ``(fd, path)``.

    Its permissions are ``mode`` or what a plain ``open(dest, "w")`` would give (see module doc).
    """
    dest = Path(dest)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(dest), suffix=suffix, dir=str(dest.parent))
    try:
        os.chmod(tmp, file_mode(dest) if mode is None else mode)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, Path(tmp)


def owner_tag() -> str:
    """``<host>-<pid>``: who made a temp folder, so a later run can prove it abandoned."""
    import socket

    host = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}"


def temp_dir(dest: PathLike) -> Path:
    """Create a temp folder beside ``dest`` (to be renamed onto it) with the mode ``mkdir`` gives,
    named ``.<dest>.<host>-<pid>.<random>`` (``folders.remove_abandoned_temp_dirs`` proves it abandoned)."""
    dest = Path(dest)
    tmp = Path(tempfile.mkdtemp(prefix=f"{tmp_prefix(dest)}{owner_tag()}.", dir=str(dest.parent)))
    try:
        os.chmod(tmp, dir_mode())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def fsync_dir(folder: PathLike) -> None:
    """Make renames in ``folder`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(str(folder), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8",
                perm: Optional[int] = None, suffix: str = TMP_SUFFIX) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temp file is removed and ``path`` is untouched. ``perm`` overrides the
    permission bits (default: those of a plain ``open``).
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(dest, suffix=suffix, mode=perm)
    binary = "b" in mode
    try:
        with os.fdopen(fd, mode, **({} if binary else {"encoding": encoding, "newline": ""})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def backup(path: PathLike) -> Optional[Path]:
    """Copy an existing file to ``<path>.bak`` (overwriting an older backup, keeping the file's
    permissions); return the backup path."""
    src = Path(path)
    if not src.exists():
        return None
    bak = src.with_name(src.name + ".bak")
    with atomic_open(bak, "wb", perm=file_mode(src)) as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out)
    return bak


def write_text(path: PathLike, text: str, keep_backup: bool = False) -> Optional[Path]:
    """Atomically write ``text``; with ``keep_backup`` the previous file is kept as ``.bak``."""
    bak = backup(path) if keep_backup else None
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return bak


def write_json(path: PathLike, data: Any, indent: int = 2) -> None:
    """Atomically write JSON (UTF-8, non-ASCII kept readable)."""
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


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


# ----------------------------------------------------------------------------------------------
# Output locations, checked before long work starts


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
