"""Cross-process locks for files imgfeat writes: kept out of the user's sight (:func:`path_lock`),
or held on an output's own open file (:func:`lock_open_file`).

``filelock`` leaves its lock file behind on release (deleting it would race with a process about
to take it), so a lock beside ``--out model.bin`` or in each cache folder is a stray 0-byte file
there forever. The lock for a path lives instead in ``$IMGFEAT_HOME/.locks/``, named by a hash of
the path's absolute form: every process that writes that path agrees on it, and nobody sees it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import IO, Any

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.home import cache_dir


def lock_file(target: Path) -> Path:
    """The lock file guarding ``target``."""
    key = hashlib.sha256(os.fsencode(os.path.abspath(target))).hexdigest()[:24]
    return cache_dir(".locks") / f"{key}.lock"


def path_lock(target: Path, timeout: float = -1) -> Any:
    """A ``filelock.FileLock`` for ``target`` (a context manager; waits by default)."""
    from filelock import FileLock

    return FileLock(str(lock_file(target)), timeout=timeout)


def lock_open_file(fh: IO[bytes], what: Path) -> None:
    """Hold an exclusive lock on an open file for as long as it is open (POSIX flock, Windows
    msvcrt): a second writer of the same output fails at once."""
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            raise _busy(what) from None
    except BlockingIOError:
        raise _busy(what) from None


def _busy(what: Path) -> UsageError:
    return UsageError(f"another imgfeat run is writing {what}",
                      hint="wait for it to finish, or give this run another --out")
