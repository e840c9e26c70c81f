"""Progress reporting contract between engines and front ends.

Engines call ``progress(task, completed, total)`` with a short task label, the number of units done
so far and the total (``None`` when unknown). The CLI turns these calls into progress bars or
periodic lines on stderr; library users can pass any callable, or nothing.
"""
from __future__ import annotations

from typing import Callable, Optional

ProgressFn = Callable[[str, int, Optional[int]], None]


def null_progress(task: str, completed: int, total: Optional[int]) -> None:
    """The default: report nothing."""
