"""Named indexes that change while they are searched, in every worker, losing nothing.

Each index is an immutable :class:`Snapshot` (the loaded index, its generation, the folder state it
was read from). A search takes the current snapshot and uses it to the end, so it answers from
the old state or the new one, never a mix. An update (:meth:`LiveIndex.update`) runs off the event
loop under a cross-process lock (``.<name>.serve.lock`` beside the folder: the server's workers
queue there), calls the retrieval builder (its writer lock; the new folder is written beside the
old one and swapped in, the old kept as ``.bak``: a ``kill -9`` at any moment leaves the old or the
new folder), bumps the generation marker ``.<name>.generation`` and publishes the new snapshot.

Other workers notice a change within :data:`POLL_S` (:meth:`Registry.poll`): the marker or the
folder's identity (a swap makes a new folder, so ``imgfeat index add`` from a shell is seen too).
They read the folder again and keep the result only if the folder did not change while they read
it. At start-up an index whose folder is missing while ``.bak`` is whole (a kill between the two
renames of a swap) is restored from ``.bak``: a restart serves the last complete state.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import ImgfeatError
from imgfeat_cli.serve import backend
from imgfeat_cli.serve.errors import BadRequest, NotFound
from imgfeat_cli.serve.settings import NAME_PATTERN

log = logging.getLogger("imgfeat.serve")

#: How often a worker looks for changes made by the others (the visibility delay's bound).
POLL_S = 0.25
#: How long an update waits for another worker's update of the same index.
WRITER_WAIT_S = 60.0
_READ_TRIES = 40

Stamp = Tuple[int, Tuple[int, int, int]]  # (generation, folder (inode, mtime, ctime))


@dataclass(frozen=True)
class Snapshot:
    """One complete state of an index."""

    index: Any
    generation: int
    stamp: Stamp
    gallery_root: Optional[str]


def _side(folder: Path, suffix: str) -> Path:
    return folder.parent / f".{folder.name}.{suffix}"


def read_generation(folder: Path) -> int:
    try:
        return int(_side(folder, "generation").read_text(encoding="ascii").strip() or 0)
    except (OSError, ValueError):
        return 0


def stamp(folder: Path) -> Stamp:
    """What changes whenever the folder is replaced (or the marker bumped)."""
    try:
        st = os.stat(folder)
        ident = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        ident = (0, 0, 0)
    return read_generation(folder), ident


def gallery_root(index: Any) -> Optional[str]:
    """The folder every recorded input path lies in (thumbnails are served from it only)."""
    paths = [p for p in backend.index_paths(index).values() if os.path.isabs(p)]
    if not paths:
        return None
    try:
        return os.path.realpath(os.path.commonpath([os.path.dirname(p) for p in paths]))
    except ValueError:  # paths on different drives
        return None


def read_consistent(folder: Path) -> Snapshot:
    """Load ``folder`` while no swap happens under the reader (retried while one does)."""
    last: Optional[BaseException] = None
    for _ in range(_READ_TRIES):
        before = stamp(folder)
        try:
            index = backend.load_index(folder)
        except ImgfeatError as exc:
            if stamp(folder) == before:  # nothing moved: the folder itself is wrong
                raise
            last = exc  # a swap under the reader (the folder is gone between its two renames)
            time.sleep(0.05)
            continue
        if stamp(folder) == before:
            return Snapshot(index, before[0], before, gallery_root(index))
        time.sleep(0.01)
    raise last or ImgfeatError(f"index {folder} kept changing while it was read")


def recover(folder: Path) -> Optional[str]:
    """Restore ``folder`` from ``.bak`` when a swap was cut between its two renames."""
    bak = folder.with_name(folder.name + ".bak")
    if folder.exists() or not bak.is_dir() or not backend.restore_backup(folder, bak):
        return None
    return f"index {folder} was missing (a write was cut short); restored its last complete state from {bak.name}"


class LiveIndex:
    """One named index folder and its current snapshot."""

    def __init__(self, name: str, folder: Path, snapshot: Snapshot) -> None:
        self.name, self.folder = name, folder
        self._snapshot = snapshot
        self._write_lock = threading.Lock()  # this process's writers, one at a time

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def refresh(self) -> bool:
        """Reload when another process changed the folder; True when a new state was published."""
        if stamp(self.folder) == self._snapshot.stamp:
            return False
        snap = read_consistent(self.folder)
        with self._write_lock:
            if snap.stamp != stamp(self.folder) or snap.stamp == self._snapshot.stamp:
                return False  # changed again meanwhile: the next poll reads it
            self._snapshot = snap
        return True

    def update(self, change: Callable[[Path], Tuple[Any, Any]]) -> Tuple[Snapshot, Any]:
        """Apply ``change(folder) -> (new index, outcome)`` (a backend write), publish the new
        snapshot; return it with the outcome."""
        from filelock import FileLock, Timeout

        with self._write_lock:
            try:
                with FileLock(str(_side(self.folder, "serve.lock")), timeout=WRITER_WAIT_S):
                    index, outcome = change(self.folder)
                    generation = read_generation(self.folder) + 1
                    fsutil.write_text(_side(self.folder, "generation"), f"{generation}\n")
                    snap = Snapshot(index, generation, stamp(self.folder), gallery_root(index))
            except Timeout:
                raise backend.IndexBusy(f"index {self.name} is being changed by another request",
                                        hint="retry shortly") from None
            self._snapshot = snap
        return snap, outcome


class Registry:
    """The indexes a server knows: ``--index`` folders by folder name, and the folders of
    ``data_dir`` (indexes built over HTTP) by their key."""

    def __init__(self, named: Dict[str, Path], data_dir: Path, identity: Dict[str, Any], allow_other: bool) -> None:
        self.named, self.data_dir = named, data_dir
        self.identity, self.allow_other = identity, allow_other
        self._live: Dict[str, LiveIndex] = {}
        self._lock = threading.Lock()
        self.problems: Dict[str, str] = {}  # name -> why it could not be (re)loaded

    def open_all(self, warn: Callable[[str], None]) -> None:
        """Open every ``--index`` (errors are fatal) and every index under ``data_dir``."""
        for name, folder in self.named.items():
            note = recover(folder)
            if note:
                warn(note)
            self._open(name, folder, warn)
        for name in self._stored_names():
            try:
                self._open(name, self.data_dir / name, warn)
            except ImgfeatError as exc:
                self.problems[name] = exc.message
                warn(f"index {name} in {self.data_dir} is not served: {exc.message}")

    def _stored_names(self) -> List[str]:
        if not self.data_dir.is_dir():
            return []
        return sorted(p.name for p in self.data_dir.iterdir() if self._valid(p.name) and p.is_dir()
                      and p.name not in self.named)

    @staticmethod
    def _valid(name: str) -> bool:
        return bool(NAME_PATTERN.fullmatch(name)) and not name.endswith(".bak")

    def _open(self, name: str, folder: Path, warn: Callable[[str], None]) -> LiveIndex:
        snap = read_consistent(folder)
        backend.check_model(snap.index, self.identity, self.allow_other, warn, name)
        for note in snap.index.notes:
            warn(f"index {name}: {note}")
        live = LiveIndex(name, folder, snap)
        with self._lock:
            self._live[name] = live
        return live

    def names(self) -> List[str]:
        """The ``--index`` names in their order, then the data folder's keys, sorted."""
        return [n for n in self.named if n in self._live] + sorted(n for n in self._live if n not in self.named)

    def folder_of(self, name: str) -> Path:
        if not isinstance(name, str) or not self._valid(name):
            raise BadRequest(f"{name!r} is not an index name",
                             hint="names are letters, digits and ._- with a letter or digit first")
        return self.named.get(name) or self.data_dir / name

    def get(self, name: str) -> LiveIndex:
        """The live index ``name``; one built by another worker is opened on first use."""
        live = self._live.get(name)
        if live is not None:
            return live
        folder = self.folder_of(name)
        if folder.is_dir():
            return self._open(name, folder, log.warning)
        raise NotFound(f"no index named {name!r}", hint=f"indexes: {', '.join(self.names()) or 'none'}")

    def create(self, build: Callable[[Path], Any]) -> Tuple[str, Snapshot]:
        """A new index under ``data_dir`` with a fresh key (PaddleX's ``/shitu-index-build``)."""
        name = str(uuid.uuid4())
        folder = self.data_dir / name
        self.data_dir.mkdir(parents=True, exist_ok=True)
        build(folder)
        live = self._open(name, folder, log.warning)
        return name, live.snapshot

    def poll(self) -> None:
        """Pick up changes made by other processes (run every :data:`POLL_S`)."""
        for live in list(self._live.values()):
            try:
                if live.refresh():
                    log.info("index %s: reloaded (generation %d)", live.name, live.snapshot.generation)
                self.problems.pop(live.name, None)
            except ImgfeatError as exc:
                if self.problems.get(live.name) != exc.message:
                    log.warning("index %s: cannot reload, still serving generation %d: %s", live.name,
                                live.snapshot.generation, exc.message)
                self.problems[live.name] = exc.message

