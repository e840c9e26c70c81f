"""Progress reporting contract between engines and front ends.

Engines call ``progress(task, completed, total)`` with a short task label, the number of units done
so far and the total (``None`` when unknown). The CLI turns these calls into progress bars or
periodic lines on stderr; library users can pass any callable, or nothing.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, Optional

ProgressFn = Callable[[str, int, Optional[int]], None]


def null_progress(task: str, completed: int, total: Optional[int]) -> None:
    """The default: report nothing."""


@contextmanager
def tqdm_progress(enabled: bool = True, unit: str = "images") -> Iterator[ProgressFn]:
    """A progress callback backed by ``tqdm.auto``: a widget in Jupyter, a text bar in a terminal.

    For the Python API (``FeatureModel.predict`` over a folder in a notebook), where there is no
    CLI to draw progress; one bar per task label, closed on exit. ``enabled=False`` yields the
    null callback, so callers can pass a user's ``progress=`` flag straight through."""
    if not enabled:
        yield null_progress
        return
    from tqdm.auto import tqdm

    bars: Dict[str, Any] = {}

    def update(task: str, completed: int, total: Optional[int]) -> None:
        bar = bars.get(task)
        if bar is None:
            bar = bars[task] = tqdm(desc=task, total=total, unit=unit, initial=completed, leave=True)
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(completed - bar.n)

    try:
        yield update
    finally:
        for bar in bars.values():
            bar.close()
