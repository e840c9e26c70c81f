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
import tempfile
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
