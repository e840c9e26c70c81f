"""The report folder: checked before the work, written whole, and never at the cost of a user's files.

A report is ``DIR/index.html``, its pictures in ``DIR/files/`` and ``DIR/imgfeat-report.json`` (what
made it, and its caps). :class:`ReportDir` is made before any long work, so a folder that cannot
take a report costs a one-line usage error (exit 2) instead of an evaluation:

* ``DIR`` missing or empty: the report is assembled beside it and renamed into place;
* ``DIR`` holding an earlier imgfeat report and nothing else: replaced by the new one;
* ``DIR`` holding anything else (a user's files): refused unless ``overwrite``; then the report is
  written beside those files, which stay as they are; a file of the user's that bears one of the
  report's three names is kept as ``NAME.bak`` (refused when that exists too). Nothing of the
  user's is deleted.

The report is assembled in a hidden staging folder (inside ``DIR`` when it exists, so the moves
are renames on one file system) and moved in with Ctrl-C held back: the pictures first, the page,
then the manifest. A failure or Ctrl-C before that leaves ``DIR`` as it was. One writer at a time:
a lock (``.DIR.lock`` beside ``DIR``, as for indexes), taken with the checks and held until the
report is in place, refuses a second report into the same folder.
A ``DIR`` that appeared during the work (``--report`` naming the ``--output`` folder) is judged
again by the same rules before anything moves.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator, List

from imgfeat_cli.common import folders, fsutil, paths
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.version import __version__

PAGE = "index.html"
ASSETS = "files"
MANIFEST = "imgfeat-report.json"
#: What a report consists of, in the order it is moved into place.
OWN = (ASSETS, PAGE, MANIFEST)
#: Staging folders are named ``.imgfeat-report-staging.XXXX``; a killed run's leftovers are ignored.
STAGING = "imgfeat-report-staging"


def _is_report(path: Path) -> bool:
    """Whether ``path`` is the manifest of an imgfeat report (a small regular JSON file saying so)."""
    if paths.not_a_file(path) is not None:
        return False
    with contextlib.suppress(OSError, ValueError):
        with open(path, "rb") as fh:
            doc = json.loads(fh.read(1 << 20))
        return isinstance(doc, dict) and "imgfeat_report" in doc
    return False


def _names(entries: List[str], limit: int = 3) -> str:
    shown = ", ".join(repr(e) for e in entries[:limit])
    return shown + (f" and {len(entries) - limit} more" if len(entries) > limit else "")


class ReportDir:
    """Where one report goes (module doc); the checks run when it is made."""

    def __init__(self, path: "os.PathLike[str] | str", overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        paths.check_output_dir(self.path)
        self.exists = self.path.is_dir()
        self.displaced: List[str] = []
        if self.exists:
            self._plan(overwrite)
        self._lock = self._take_lock()

    def _take_lock(self) -> Any:
        return folders.take_writer_lock(self.path, "the report")

    def _plan(self, overwrite: bool) -> None:
        """Refuse a folder holding a user's files (without ``overwrite``); list the names to keep as .bak."""
        entries = sorted(e for e in os.listdir(self.path) if not e.startswith(f".{STAGING}."))
        ours = set(OWN) if _is_report(self.path / MANIFEST) else set()
        foreign = [e for e in entries if e not in ours]
        if foreign and not overwrite:
            raise UsageError(f"report folder {self.path} holds other files ({_names(foreign)})",
                             hint="choose a new or empty folder, or add --overwrite to write the report beside "
                                  "them (nothing of yours is deleted)")
        self.displaced = [e for e in OWN if e in foreign]
        for name in self.displaced:
            if os.path.lexists(self.path / f"{name}.bak"):
                raise UsageError(f"{self.path / name} is not from an imgfeat report and {name}.bak exists too",
                                 hint=f"move {name} or {name}.bak out of {self.path}, or choose another folder")

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """An empty folder to assemble the report in; moved into ``DIR`` when the block succeeds."""
        try:
            tmp = fsutil.temp_dir(self.path / STAGING if self.exists else self.path)
            try:
                (tmp / ASSETS).mkdir()
                yield tmp
                if not self.exists and os.path.lexists(self.path):  # made meanwhile: judge it now
                    paths.check_output_dir(self.path)
                    self.exists = True
                    self._plan(self.overwrite)
                self._publish(tmp)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            self._lock.release()

    def _publish(self, tmp: Path) -> None:
        with folders.deferred_interrupt():
            if not self.exists:
                os.rename(tmp, self.path)
                return
            for name in self.displaced:
                os.rename(self.path / name, self.path / f"{name}.bak")
            for name in OWN:
                if os.path.lexists(self.path / name):  # an earlier report's: dropped with the staging folder
                    os.rename(self.path / name, tmp / f"previous-{name}")
                os.rename(tmp / name, self.path / name)
        fsutil.fsync_dir(self.path)


def write_manifest(folder: Path, kind: str, caps: Dict[str, Any], counts: Dict[str, Any]) -> None:
    """``imgfeat-report.json``: what made the report and the caps that bounded it."""
    doc = {"imgfeat_report": kind, "imgfeat_version": __version__, "page": PAGE, "caps": caps, "counts": counts}
    (folder / MANIFEST).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
