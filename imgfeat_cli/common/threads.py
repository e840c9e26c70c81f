"""Paddle's CPU math threads: the one place ``train``, ``eval`` and ``export`` set them.

``import paddle`` writes ``OMP_NUM_THREADS=1`` into the environment when it is unset, and its
OpenMP runtime (which runs the convolutions of a dygraph forward and backward) sizes its team from
that: training used one core whatever the machine had. So the count is put into the environment
*before* paddle is imported (the value the user had is kept in
:data:`imgfeat_cli.common.startup.OMP_NUM_THREADS_AT_START`, which :func:`cpu_count` reads), and
paddle's own ``set_num_threads`` is called as well, which also covers a process that imported
paddle first (a notebook, a test run). Inference engines take their thread count explicitly and are
not affected.

``KMP_BLOCKTIME=1`` (unless set): paddle's OpenMP (Intel's) lets an idle thread spin 200 ms
between parallel regions. Measured on 2 cores at batch 32 (docs/training.md): 2 threads with the
default took 5.4-5.8 s per step for 10.8-11.4 s of CPU (1 thread: 7.2-7.4 s), with 1 ms 5.5 s for
7.5 s of CPU; on a machine other work keeps busy the spinning made 2 threads slower than one.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Callable, Optional

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.common.system import cpu_count, usable_threads

#: the count :func:`use_math_threads` last set (1 until it is called: paddle's own default)
_math_threads = 1

#: paddle prints this on stderr at import whenever OMP_NUM_THREADS > 1 (a data-parallel caveat).
_PADDLE_THREADS_WARNING = ("WARNING: OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS WISELY")


def resolve_threads(threads: Optional[int], what: str = "--threads",
                    note: Optional[Callable[[str], None]] = None) -> int:
    """``threads`` within this machine's cores (the one rule, :func:`~imgfeat_cli.common.system.usable_threads`:
    more is lowered, with ``note``), or every core this process may use."""
    if threads is not None and int(threads) < 1:
        raise UsageError(f"{what} {threads} is not a thread count", hint=f"give 1 or more, or leave {what} unset")
    return usable_threads(threads, what, note) or cpu_count()


def use_math_threads(threads: Optional[int] = None, what: str = "--threads",
                     note: Optional[Callable[[str], None]] = None) -> int:
    """Make paddle's CPU math use ``threads`` threads (default: every core this process may use)
    and return the count. Imports paddle (quietly) when it is not imported yet. ``what`` names the
    setting when a count beyond the cores is lowered (said through ``note``)."""
    n = resolve_threads(threads, what, note)
    if "paddle" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(n)
        os.environ.setdefault("KMP_BLOCKTIME", "1")
        _import_paddle_quietly()
    import paddle

    paddle.base.core.set_num_threads(n)
    global _math_threads
    _math_threads = n
    return n


def math_threads() -> int:
    """The thread count paddle's CPU math was given (1 where :func:`use_math_threads` was not called)."""
    return _math_threads


def _import_paddle_quietly() -> None:
    """``import paddle`` without its OMP_NUM_THREADS warning (anything else it prints is kept)."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            import paddle  # noqa: F401
    finally:
        kept = [line for line in buf.getvalue().splitlines(keepends=True)
                if not line.startswith(_PADDLE_THREADS_WARNING)]
        if kept:
            sys.stderr.write("".join(kept))
