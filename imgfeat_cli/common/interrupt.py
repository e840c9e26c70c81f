"""Ctrl-C during long work that writes files: one line, exit 130, and never a torn output.

Used by ``train`` (and ``export``) as follows:

* Before the work proper (setup, nothing written yet) Ctrl-C aborts at once.
* Once ``graceful`` is set (training runs), the first Ctrl-C asks for a graceful stop: the current
  step finishes, ``latest/`` is saved and the run exits 130 (``--resume`` continues it exactly).
* The next Ctrl-C aborts: at once in ordinary code, and at the next safe point inside a
  *protected* section (writing a checkpoint, exporting, moving a previous run aside), so files are
  never half-switched; the last complete output stays as it was.

The handler never raises inside a protected section: a ``KeyboardInterrupt`` raised while paddle's
C++ code calls back into Python (``paddle.jit`` tracing, ``paddle.save``) comes out as an unrelated
``SystemError``. Protected code calls :meth:`RunSignals.check` at its safe points instead.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional


class RunSignals:
    def __init__(self, log: Optional[Callable[[str], None]] = None) -> None:
        self.count = 0  # Ctrl-C presses so far
        self.graceful = False  # True once training runs: the first press means "stop after this step"
        self._protected = 0
        self._log = log or (lambda message: None)

    @property
    def stop_requested(self) -> bool:
        return self.count >= 1

    @property
    def aborted(self) -> bool:
        return self.count >= 2 or (self.count >= 1 and not self.graceful)

    def request_stop(self) -> None:
        """What a first Ctrl-C does (tests and callers stop a run at a chosen step with it)."""
        self.count = max(self.count, 1)

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.count == 1 and self.graceful:
            self._log("interrupt: finishing this step and saving latest/ (Ctrl-C again to abort)")
            return
        if self._protected:
            return  # raised at the section's next safe point (check) or at its end
        raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator["RunSignals"]:
        """Route SIGINT here for the duration (only possible on the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextmanager
    def protected(self, abort_on_exit: bool = True) -> Iterator[None]:
        """A section a Ctrl-C must not cut at an arbitrary point. An abort requested inside it is
        raised at its :meth:`check` points or, with ``abort_on_exit``, when it ends."""
        self._protected += 1
        try:
            yield
        finally:
            self._protected -= 1
        if abort_on_exit and not self._protected:
            self.check()

    def check(self) -> None:
        """A safe point: raise ``KeyboardInterrupt`` when an abort was requested."""
        if self.aborted:
            raise KeyboardInterrupt
