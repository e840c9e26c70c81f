"""Progress reporting contract between engines and front ends.

Engines call ``progress(task, completed, total)`` with a short task label, the number of units done
so far and the total (``None`` when unknown). The CLI turns these calls into rich progress bars on
stderr; library users can pass any callable, or nothing.
"""
from __future__ import annotations

from typing import Callable, Optional

ProgressFn = Callable[[str, int, Optional[int]], None]


def null_progress(task: str, completed: int, total: Optional[int]) -> None:
    """The default: report nothing."""


def cpu_count() -> int:
    """Cores this process may use (respects affinity/cgroup masks, unlike os.cpu_count)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
