"""Progress on stderr: a rich bar on a terminal, periodic one-line reports in logs.

Engines report through the ``progress(task, done, total)`` contract (``common.progress``). On a
terminal that becomes a live bar. When stderr is a file or a pipe (CI, ``nohup``, a scheduler's
log) a bar would be noise, but silence for an hour looks like a hang: ``PeriodicLines`` writes one
plain line per task every ``interval`` seconds (done/total, rate, ETA) and a final line for work
that lasted long enough to get one, so short jobs stay quiet.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, Optional

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)

#: Seconds between progress lines when stderr is not a terminal.
LINE_INTERVAL = 30.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _amount(n: float, unit: str) -> str:
    if unit != "bytes":
        return f"{n:,.0f}"
    for div, name in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")):
        if n >= div:
            return f"{n / div:.1f} {name}"
    return f"{n:.0f} B"


@dataclass
class _Task:
    start: float
    first_done: int
    last_line: float
    lines: int = 0
    finished: bool = False


class PeriodicLines:
    """A progress callback that writes ``task: done/total unit (pct), rate, ETA`` every
    ``interval`` seconds of ``clock`` per task, plus a final line once a reported task finishes."""

    def __init__(self, write: Callable[[str], None], unit: str = "items", interval: float = LINE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.write, self.unit, self.interval, self.clock = write, unit, interval, clock
        self.tasks: Dict[str, _Task] = {}

    def __call__(self, task: str, done: int, total: Optional[int], extra: str = "") -> None:
        now = self.clock()
        st = self.tasks.get(task)
        if st is None:
            st = self.tasks[task] = _Task(start=now, first_done=done, last_line=now)
            return
        finished = total is not None and done >= total
        if finished and not st.finished and st.lines:
            st.finished = True
            self.write(self.line(task, st, done, total, now, extra, final=True))
        elif not finished and now - st.last_line >= self.interval:
            st.lines += 1
            st.last_line = now
            self.write(self.line(task, st, done, total, now, extra))

    def line(self, task: str, st: _Task, done: int, total: Optional[int], now: float, extra: str,
             final: bool = False) -> str:
        elapsed = max(now - st.start, 1e-9)
        rate = (done - st.first_done) / elapsed
        unit = "" if self.unit == "bytes" else f" {self.unit}"
        amount = _amount(done, self.unit) + (f"/{_amount(total, self.unit)}" if total else "")
        parts = [f"{task}: {amount}{unit}" + (f" ({100 * done / total:.0f}%)" if total else "")]
        parts.append(f"{_amount(rate, self.unit) if self.unit == 'bytes' else f'{rate:.1f}'}{unit}/s")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        else:
            parts.append(f"ETA {_duration((total - done) / rate)}" if total and rate > 0 else "ETA unknown")
        if extra:
            parts.append(extra)
        return ", ".join(parts)


@contextmanager
def rich_bar(console: Console, unit: str) -> Iterator[Callable[..., None]]:
    """A live rich bar per task on a terminal."""
    if unit == "bytes":
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn()]
    else:
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn(f"{unit}"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                   TextColumn("ETA"), TimeRemainingColumn()]
    tasks: Dict[str, TaskID] = {}
    with Progress(*columns, console=console, transient=False) as bar:
        def update(task: str, done: int, total: Optional[int], extra: str = "") -> None:
            tid = tasks.get(task)
            if tid is None:
                tid = tasks[task] = bar.add_task(task, total=total, rate="")
            t = bar.tasks[tid]
            rate = f"{done / t.elapsed:.1f}/s" if t.elapsed and done else ""
            bar.update(tid, completed=done, total=total, rate=rate)
        yield update
