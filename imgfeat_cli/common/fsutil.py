"""Safe file writing: nothing the user had is lost or half-written.

All writers go through a temp file in the destination folder followed by ``os.replace`` (atomic on
POSIX and Windows within one filesystem). Rewriting a user's file keeps the previous version as
``<name>.bak`` first.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: Optional[str] = "utf-8") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``.

    On any exception the temp file is removed and ``path`` is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=str(dest.parent))
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
    """Copy an existing file to ``<path>.bak`` (overwriting an older backup); return the backup path."""
    src = Path(path)
    if not src.exists():
        return None
    bak = src.with_name(src.name + ".bak")
    with atomic_open(bak, "wb") as out, open(src, "rb") as inp:
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


def umask() -> int:
    """The process umask (read without changing it for good)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C for a few statements that must run together; re-raise it after them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def replace_dir(path: PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; on success it takes ``path``'s place and the
    previous folder becomes ``<path>.bak`` (an older backup is dropped first).

    Files that must change together (an index's vector file, id map and side file) are written into
    the temp folder, so a reader sees the old set or the new one, never a mix. The two renames run
    with Ctrl-C held back; a crash between them leaves ``<path>.bak`` whole (readers say so).
    On any exception the temp folder is removed and ``path`` is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=str(dest.parent)))
    try:
        os.chmod(tmp, 0o777 & ~umask())
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        bak = dest.with_name(dest.name + ".bak")
        if dest.exists() and bak.exists():
            shutil.rmtree(bak) if bak.is_dir() and not bak.is_symlink() else bak.unlink()
        with deferred_interrupt():
            if dest.exists():
                os.replace(dest, bak)
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def writer_lock(path: PathLike) -> Any:
    """A cross-process lock for the one writer of ``path`` (held in ``.<name>.lock`` beside it, so
    it survives ``path`` being swapped). Raises ``filelock.Timeout`` when another process holds it."""
    from filelock import FileLock

    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(dest.parent / f".{dest.name}.lock"), timeout=0)
