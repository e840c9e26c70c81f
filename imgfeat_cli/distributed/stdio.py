"""Where Ray's output goes while this process drives a Ray job: never stdout, and on stderr only
with ``verbose``.

Ray writes around Python's logging settings: its C++ core (in this process, and in the local
raylet and GCS that ``ray.init`` starts, which inherit our descriptors) writes lines like
``[2026-01-01 12:00:00,123 E 123 123] core_worker.cc:2465: ...`` straight to fd 2 (Ray 2.60
logs a harmless notice at error level for every Ray Data actor pool, ray-project/ray#53727), and
its driver prints cluster messages such as ``(raylet) Task ... failed`` on ``sys.stdout``.

While :func:`ray_stdio` is active, fds 1 and 2 and ``sys.stdout`` lead to stderr, through a
filter that drops those lines unless ``verbose``; ``sys.stderr`` writes to the real stderr, so
imgfeat's own messages and progress bars are untouched (and still see a terminal).
"""
from __future__ import annotations

import os
import re
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Optional, TextIO

RAY_LINE = re.compile(rb"^(\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\] |\((raylet|autoscaler|[^)]*pid=\d+)[^)]*\) )")


@contextmanager
def ray_stdio(verbose: bool = False) -> Iterator[None]:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved_out, real_err = os.dup(1), os.dup(2)
    pump: Optional[threading.Thread] = None
    if verbose:
        os.dup2(real_err, 1)
    else:
        read_end, write_end = os.pipe()
        pump = threading.Thread(target=_pump, args=(read_end, real_err), daemon=True)
        pump.start()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout = _text(os.dup(1), old_err)
    if _fd(old_err) == 2:  # (a test runner's captured stderr is left as it is)
        sys.stderr = _text(os.dup(real_err), old_err)
    try:
        yield
    finally:
        for replaced, old in ((sys.stdout, old_out), (sys.stderr, old_err)):
            if replaced is not old:
                replaced.close()
        sys.stdout, sys.stderr = old_out, old_err
        os.dup2(saved_out, 1)
        os.dup2(real_err, 2)  # closes our last write end: the pump ends once Ray's processes are gone
        os.close(saved_out)
        if pump is not None:
            pump.join(timeout=5)
        if pump is None or not pump.is_alive():
            os.close(real_err)


def _text(fd: int, like: object) -> TextIO:
    return os.fdopen(fd, "w", buffering=1, encoding=getattr(like, "encoding", None) or "utf-8",
                     errors="backslashreplace")


def _fd(stream: object) -> int:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return -1


def _pump(read_end: int, real: int) -> None:
    with os.fdopen(read_end, "rb") as src:
        for line in src:
            if not RAY_LINE.match(line):
                try:
                    os.write(real, line)
                except OSError:
                    return
