"""Folders that change as a whole: an index, a model, an int8 folder is written into a temp folder
beside its place and swapped in, the previous one kept as ``<folder>.bak``; a user's own
``<folder>.bak`` is never taken for imgfeat's; temp folders that a killed process left are removed
once provably abandoned; one writer per folder.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Iterator, List

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.fsutil import PathLike


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process, or a number that is no pid: not provably gone
    return True


def remove_abandoned_temp_dirs(dest: PathLike) -> List[Path]:
    """Remove the temp folders ``fsutil.temp_dir`` made beside ``dest`` for processes of this host
    that no longer run (``kill -9`` while a model or an index was being written); return them.
    Only what is provably abandoned goes: another host's, a live process's, or an older unnamed
    one stays."""
    dest = Path(dest)
    prefix = f"{fsutil.tmp_prefix(dest)}{fsutil.owner_tag().rsplit('-', 1)[0]}-"
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(dest.parent):
            if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
                continue
            pid = entry.name[len(prefix):].split(".", 1)[0]
            if pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold back Ctrl-C for a few statements that must run together; re-raise it after them
    (main thread only: elsewhere Python delivers no signals; a process that ignores SIGINT, as a
    background job does, keeps ignoring it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and previous is not signal.SIG_IGN:
        raise KeyboardInterrupt


def _backup_record(bak: Path) -> Path:
    """Beside ``X.bak``: the identity of the folder imgfeat moved there (so it never takes a
    user's own ``X.bak`` for its backup)."""
    return bak.with_name(f".{bak.name}.imgfeat")


def _own_backup(bak: Path) -> bool:
    try:
        st = os.lstat(bak)
        return _backup_record(bak).read_text(encoding="utf-8").split() == [str(st.st_dev), str(st.st_ino)]
    except (OSError, ValueError):
        return False


def check_backup_free(path: PathLike) -> None:
    """Refuse (one line, exit 2) when replacing folder ``path`` would drop a ``<path>.bak`` that
    imgfeat did not make: a user's own backup is never replaced by imgfeat's. Called before the
    work, by every command that replaces a folder (index, quantize, export), and by
    :func:`replace_dir` itself."""
    dest = Path(path)
    bak = dest.with_name(dest.name + ".bak")
    if not dest.exists() or not os.path.lexists(bak) or _own_backup(bak):
        return
    raise UsageError(f"{bak} exists and imgfeat did not make it: replacing {dest} would put the previous "
                     f"{dest.name} there in its place", hint=f"move {bak} elsewhere (or delete it), then rerun")


@contextlib.contextmanager
def replace_dir(path: PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside ``path``; on success it takes ``path``'s place and the
    previous folder becomes ``<path>.bak`` (an older backup of imgfeat's is dropped first; a
    ``<path>.bak`` imgfeat did not make is refused before anything, :func:`check_backup_free`).

    Files that must change together (an index's vector file, id map and side file) are written into
    the temp folder, so a reader sees the old set or the new one, never a mix. The two renames run
    with Ctrl-C held back; a crash between them leaves ``<path>.bak`` whole (readers say so).
    On any exception the temp folder is removed and ``path`` is untouched. Unlike
    :class:`~imgfeat_cli.common.filetxn.FileSet`, the new files are streamed to disk, not held in
    memory: an index's vector file may be gigabytes.
    """
    dest = Path(path)
    check_backup_free(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temp_dirs(dest)
    tmp = fsutil.temp_dir(dest)
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as fh:
                    os.fsync(fh.fileno())
        bak = dest.with_name(dest.name + ".bak")
        check_backup_free(dest)  # a user's X.bak made while the work ran is not dropped either
        if dest.exists() and os.path.lexists(bak):
            shutil.rmtree(bak) if bak.is_dir() and not bak.is_symlink() else bak.unlink()
        with deferred_interrupt():
            moved = dest.exists()
            if moved:
                os.replace(dest, bak)
            os.replace(tmp, dest)
        if moved:
            st = os.lstat(bak)
            fsutil.write_text(_backup_record(bak), f"{st.st_dev} {st.st_ino}\n")
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


def take_writer_lock(path: PathLike, what: str) -> Any:
    """:func:`writer_lock` taken at once, or a one-line error naming ``what`` (``the index``, ``a
    report``): another imgfeat holds it (exit 2: wait, or write elsewhere), or the lock file cannot
    be made beside ``path`` (exit 2: the location is not writable)."""
    from filelock import Timeout

    dest = Path(path)
    try:
        lock = writer_lock(dest)
        lock.acquire()
    except Timeout:
        if not os.path.exists(dest.parent / f".{dest.name}.lock"):  # not held elsewhere: it could not be made
            raise UsageError(f"cannot write beside {what} {dest} (its lock file)",
                             hint="choose a location you may write to") from None
        raise UsageError(f"another imgfeat process is writing {what} {dest}",
                         hint="wait for it to finish, or choose another location") from None
    except OSError as exc:
        raise UsageError(f"cannot write beside {what} {dest}: {exc.strerror or exc}",
                         hint="choose a location you may write to, or fix its permissions") from None
    return lock
