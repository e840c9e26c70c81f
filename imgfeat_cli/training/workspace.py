"""The output folder of a run: vetted before anything is written, and a previous run kept until the
new one has something to show for itself.

``plan`` only reads (and locks the folder: one writer at a time): it refuses an output that is a file or not writable, refuses to reuse a folder
holding a run unless ``--resume`` or ``--overwrite`` says what to do, and resolves the checkpoint to
resume from. ``begin`` (after the whole run has been set up and validated) moves a run being
replaced into ``OUT/.previous-run/``; ``commit`` (right after the new run's first checkpoint)
drops it, keeping its ``train.log``, ``train_result.json`` and ``config.yaml`` as ``.bak``;
``restore`` (any failure or Ctrl-C before that) puts it back as it was. A process killed in
between is repaired by the next ``plan``: ``.previous-run`` is restored, ``.previous-run.done``
(committed) is finished off.
"""
from __future__ import annotations

import os
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any, List, Optional

from imgfeat_cli.common import fsutil, paths
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.filetxn import folder_lock
from imgfeat_cli.training import checkpoint as ckpt
from imgfeat_cli.training.exports import STAGED
from imgfeat_cli.training.options import LOG_FILE, RESULT_FILE, TrainOptions

ASIDE = ".previous-run"
COMMITTED = ASIDE + ".done"
RUN_FILES = (LOG_FILE, RESULT_FILE, "config.yaml")


def checkpoint_dirs(out: Path) -> List[Path]:
    """The checkpoint folders of a run in ``out``: ``latest``, ``best_model`` and ``epoch_N``."""
    if not out.is_dir():
        return []
    named = [out / "latest", out / "best_model"] + sorted(out.glob("epoch_*"))
    return [p for p in named if p.is_dir()]


class Workspace:
    """Use as a context manager: the folder is locked (one writer) from ``plan`` or ``begin`` to the end."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.replacing = False  # a previous run is moved aside by begin()
        self.committed = True  # nothing to restore until begin() moves something aside
        self.restored = False  # restore() put a previous run back
        self._locks = ExitStack()
        self._locked = False

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._locks.close()

    def _lock(self) -> None:
        self._locks.enter_context(folder_lock(self.out, wait=False))
        self._locked = True

    # reading ------------------------------------------------------------------------------------
    def plan(self, opts: TrainOptions) -> Optional[Path]:
        """Decide between a fresh run and a resume (returns the checkpoint prefix to resume from)."""
        paths.check_output_dir(self.out)
        if self.out.is_dir():
            self._lock()
        self.repair()
        if self.out.is_dir():
            ckpt.repair_swaps(self.out)
        held = checkpoint_dirs(self.out)
        latest = self.out / "latest"
        if opts.resume_path:
            prefix = ckpt.resolve_resume(opts.resume_path)
            continuing = latest.is_dir() and prefix.parent.resolve() == latest.resolve()
            if held and not continuing and not opts.overwrite:
                raise UsageError(f"output folder {self.out} already holds a training run; resuming "
                                 f"{prefix.parent} there would replace its checkpoints",
                                 hint="pass --overwrite (the old run is kept until the resumed one saves a checkpoint) "
                                      "or choose another --output")
            self.replacing = not continuing
            return prefix
        if opts.resume and latest.is_dir():
            return ckpt.resolve_resume(str(latest))
        if held and not opts.overwrite:
            how = ("pass --resume to continue it, " if latest.is_dir() else
                   f"resume one with -o Train.resume_path={held[-1]}, ")
            raise UsageError(f"output folder {self.out} already holds a training run",
                             hint=how + "--overwrite to start again, or choose another --output")
        self.replacing = True
        return None

    def _run_entries(self) -> List[Path]:
        files = [self.out / name for name in RUN_FILES if (self.out / name).is_file()]
        return checkpoint_dirs(self.out) + files

    # writing ------------------------------------------------------------------------------------
    def begin(self) -> None:
        """Create the folder; move a run being replaced aside (nothing is deleted yet)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if not self._locked:  # the folder did not exist when planned: lock it now, and make sure
            self._lock()  # no other run appeared in it since
            if checkpoint_dirs(self.out):
                raise UsageError(f"another training run started in {self.out} meanwhile",
                                 hint="choose another --output, or rerun once it has finished")
        entries = self._run_entries() if self.replacing else []
        if not entries:
            return
        aside = self.out / ASIDE
        aside.mkdir()
        self.committed = False
        for path in entries:
            path.rename(aside / path.name)
        fsutil.fsync_dir(self.out)

    def commit(self) -> None:
        """The new run has a checkpoint: drop the old one, keeping its log, result and config as ``.bak``."""
        if self.committed:
            return
        done = self.out / COMMITTED
        (self.out / ASIDE).rename(done)
        self.committed = True
        self._finish_commit(done)

    def _finish_commit(self, done: Path) -> None:
        for name in RUN_FILES:
            if (done / name).is_file():
                os.replace(done / name, self.out / f"{name}.bak")
        shutil.rmtree(done, ignore_errors=True)

    def restore(self) -> None:
        """Failure before the first checkpoint: remove what the new run wrote, put the old run back."""
        aside = self.out / ASIDE
        if self.committed or not aside.is_dir():
            return
        for path in self._run_entries() + [self.out / STAGED]:  # all made by the new run
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        for path in sorted(aside.iterdir()):
            path.rename(self.out / path.name)
        aside.rmdir()
        self.committed = self.restored = True
        fsutil.fsync_dir(self.out)

    def repair(self) -> None:
        """Finish what a killed process left: a committed replacement, or one to undo."""
        if (self.out / COMMITTED).is_dir():
            self._finish_commit(self.out / COMMITTED)
        if (self.out / ASIDE).is_dir():
            self.committed = False
            self.restore()
