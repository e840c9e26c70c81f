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

Whether a path can be read or written at all is :mod:`imgfeat_cli.common.paths`' concern; folders
swapped as a whole, their backups and writer locks are :mod:`imgfeat_cli.common.folders`'.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Tuple, Union


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
