"""Files in one folder that change together: all of them, or none (a small redo journal).

::

    with FileSet(folder) as files:
        files.stage_text("train.txt", ...)
        files.stage_text("gallery.txt", ...)
        files.commit()

1. **stage**: each new version is written and fsynced to a temp file beside its target.
2. **commit**: each existing target is copied to a temp twin of ``<name>.bak``; then the journal
   ``.imgfeat-switch.json``, naming every pending rename, is written atomically. Writing the journal
   is the commit point: before it nothing the user sees has changed (a failure removes the temps);
   after it the switch is completed whatever happens (rolled forward).
3. **switch**: per file, ``<name>.bak`` <- old version, then ``<name>`` <- new version (two
   ``os.replace``); then the journal is removed.

A crash, Ctrl-C or full disk at any step therefore leaves the complete old set, or a journal that
:func:`recover` rolls forward the next time the folder is read (``datasets.dataset.read_list`` calls
it), giving the complete new set. The ``.bak`` files always form one set, the previous one: when
some targets existed, a target that did not has its stale ``.bak`` removed; when none existed (a
first write), existing ``.bak`` files are left alone. One writer per folder: an exclusive ``flock``
on the folder itself, so no lock file is left behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import ImgfeatError, UsageError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks on folders; go on unlocked
    fcntl = None  # type: ignore[assignment]

JOURNAL = ".imgfeat-switch.json"
TXN_SUFFIX = ".imgfeat-txn"
_held: Dict[str, int] = {}  # folders this process has locked (the lock is re-entrant per process)


@contextlib.contextmanager
def folder_lock(folder: Path, wait: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``folder``; without ``wait`` a busy folder is a usage error."""
    key = os.path.realpath(folder)
    if key in _held or fcntl is None:
        yield
        return
    try:
        fd = os.open(key, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise UsageError(f"another imgfeat process is changing files in {folder}",
                             hint="wait for it to finish, then rerun") from None
        except OSError:
            pass  # a filesystem without locks: go on unlocked
        _held[key] = fd
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _load_journal(path: Path) -> Dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        entries = doc["entries"]
        ok = isinstance(doc.get("backups"), bool) and all(
            _plain_name(e["name"]) and _plain_name(e["tmp"]) and e["tmp"].endswith(TXN_SUFFIX)
            and (e.get("bak_tmp") is None or (_plain_name(e["bak_tmp"]) and e["bak_tmp"].endswith(TXN_SUFFIX)))
            and isinstance(e.get("had_old"), bool) for e in entries)
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ImgfeatError(f"{path} is not a journal imgfeat wrote (unreadable or edited)",
                           hint="check the files it names, then delete it")
    return doc


def _apply(folder: Path, journal: Dict[str, Any]) -> None:
    """Do every rename the journal names that is still pending; safe to repeat (a pending rename is
    one whose temp file still exists: ``os.replace`` consumes it atomically)."""
    for e in journal["entries"]:
        tmp = folder / e["tmp"]
        if not tmp.exists():
            continue
        bak = folder / (e["name"] + ".bak")
        if e.get("bak_tmp") and (folder / e["bak_tmp"]).exists():
            os.replace(folder / e["bak_tmp"], bak)
        elif journal["backups"] and not e["had_old"]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(bak)
        os.replace(tmp, folder / e["name"])
    fsutil.fsync_dir(folder)


def _finish(folder: Path, journal: Dict[str, Any]) -> None:
    _apply(folder, journal)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(folder / JOURNAL)
    fsutil.fsync_dir(folder)


def _recover_locked(folder: Path) -> List[str]:
    path = folder / JOURNAL
    if not path.exists():
        return []
    journal = _load_journal(path)
    pending = [e["name"] for e in journal["entries"] if (folder / e["tmp"]).exists()]
    try:
        _finish(folder, journal)
    except OSError as exc:
        raise ImgfeatError(f"{folder} holds an unfinished update of {', '.join(pending) or 'its files'} "
                           f"({JOURNAL}) that cannot be completed: {exc.strerror or exc}",
                           hint="give imgfeat write access to the folder (or free space) and rerun") from None
    return pending


def recover(folder: Path) -> List[str]:
    """Complete a switch a crash interrupted in ``folder``; return the names it completed."""
    folder = Path(folder)
    if not (folder / JOURNAL).exists():
        return []
    with folder_lock(folder, wait=True):
        return _recover_locked(folder)


class FileSet:
    """Stage new versions of files in ``folder``, then switch them all in at once (module doc)."""

    def __init__(self, folder: Path, keep_backup: bool = True) -> None:
        self.folder = Path(folder)
        self.keep_backup = keep_backup
        self.entries: Dict[str, Dict[str, Any]] = {}
        self.backups: List[Path] = []
        self.repaired: List[str] = []
        self._stack = contextlib.ExitStack()
        self._committed = False

    def __enter__(self) -> "FileSet":
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stack.enter_context(folder_lock(self.folder, wait=False))
        try:
            self.repaired = _recover_locked(self.folder)
            for p in self.folder.glob(f".*{TXN_SUFFIX}"):  # temps of a run that died before its journal
                p.unlink()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if not self._committed:
                if (self.folder / JOURNAL).exists():  # interrupted right after the commit point
                    _finish(self.folder, _load_journal(self.folder / JOURNAL))
                else:
                    self._discard()
        finally:
            self._stack.close()

    def stage_bytes(self, name: str, data: bytes) -> None:
        if not _plain_name(name) or name in self.entries:
            raise ValueError(f"bad or repeated file name {name!r}")
        for target in (self.folder / name, self.folder / (name + ".bak")):  # a rename onto these would fail
            if os.path.lexists(target) and not target.is_file():              # after the commit point
                raise UsageError(f"{target} exists and is not a file; nothing was changed",
                                 hint="move it away and rerun")
        fd, tmp = fsutil.temp_file(self.folder / name, suffix=TXN_SUFFIX)
        self.entries[name] = {"name": name, "tmp": tmp.name, "bak_tmp": None, "had_old": False}
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def stage_text(self, name: str, text: str) -> None:
        self.stage_bytes(name, text.encode("utf-8"))

    def commit(self) -> List[Path]:
        """Switch every staged file in; return the ``.bak`` files now holding the previous set."""
        any_old = any((self.folder / n).is_file() for n in self.entries)
        backups = self.keep_backup and any_old
        if backups:
            for e in self.entries.values():
                if (self.folder / e["name"]).is_file():
                    e["had_old"] = True
                    self._copy_for_backup(e["name"])
        journal = {"version": 1, "backups": backups, "entries": list(self.entries.values())}
        with fsutil.atomic_open(self.folder / JOURNAL, "w", suffix=TXN_SUFFIX) as fh:
            json.dump(journal, fh)
        self._committed = True
        try:
            _finish(self.folder, journal)
        except BaseException as exc:
            with contextlib.suppress(Exception):  # one more try: after a Ctrl-C or a transient error
                _finish(self.folder, journal)
            if not isinstance(exc, Exception):
                raise
            if (self.folder / JOURNAL).exists():
                raise ImgfeatError(f"could not finish updating {', '.join(self.entries)} in {self.folder}: "
                                   f"{getattr(exc, 'strerror', None) or exc}; imgfeat completes the update the "
                                   "next time it reads the folder", hint="free space or fix permissions, then rerun"
                                   ) from None
        self.backups = [self.folder / (e["name"] + ".bak") for e in self.entries.values() if e["had_old"]]
        return self.backups

    def _copy_for_backup(self, name: str) -> None:
        src = self.folder / name
        fd, tmp = fsutil.temp_file(self.folder / (name + ".bak"), suffix=TXN_SUFFIX, mode=fsutil.file_mode(src))
        self.entries[name]["bak_tmp"] = tmp.name  # so a failure below still removes it
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
            out.flush()
            os.fsync(out.fileno())

    def _discard(self) -> None:
        for key in ("bak_tmp", "tmp"):  # backups first: a staged file without its backup is never left
            for e in self.entries.values():
                if e[key]:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.folder / e[key])
