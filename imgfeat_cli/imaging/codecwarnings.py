"""libjpeg's warnings, with the file they are about.

A JPEG with corrupt entropy data decodes (as PaddleX's ``cv2.imread`` decodes it: the damaged
blocks come out grey or smeared), and the libjpeg inside OpenCV prints ``Corrupt JPEG data: 3
extraneous bytes before marker 0xd9`` on file descriptor 2, naming no file. imgfeat keeps decoding
such a file (PaddleX embeds it; most such warnings are a few stray bytes with no visible damage)
and names it: while :func:`naming_codec_warnings` is active, fd 2 goes through a pipe, each OpenCV
JPEG decode writes a start and an end marker around itself, and a reader thread turns each libjpeg
line into an :class:`ImageWarning` naming the file(s) being decoded when it was written (exactly
one with one decoding thread, the default up to 3 cores). Every other line passes through as it was.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from contextlib import contextmanager
from itertools import count
from typing import Dict, Iterator, Optional

#: What libjpeg's warnings start with (jerror.h: JWRN_*), as OpenCV's copy prints them.
LIBJPEG_LINE = re.compile(rb"^(Corrupt JPEG data|Premature end of JPEG file|Warning: |Invalid SOS|Inconsistent "
                          rb"progression|Invalid JPEG file structure|Unsupported marker|Bogus)")
_MARK = b"\x00imgfeat-jpeg "


class ImageWarning(UserWarning):
    """An image was used, but something about it is worth a look (a JPEG with corrupt data)."""


class _Capture:
    def __init__(self) -> None:
        self.users = 0
        self.lock = threading.Lock()
        self.tokens = count(1)
        self.open: Dict[int, str] = {}
        self.saved: Optional[int] = None
        self.reader: Optional[threading.Thread] = None
        self.python_stderr: Optional[object] = None

    def start(self) -> None:
        """fd 2 into the pipe; Python's own ``sys.stderr``, when it is fd 2, onto a copy of the
        real one (imgfeat's messages go straight out, never through the reader)."""
        read_fd, write_fd = os.pipe()
        sys.stderr.flush()
        self.saved = os.dup(2)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        if _fileno(sys.stderr) == 2:
            self.python_stderr = sys.stderr
            sys.stderr = open(self.saved, "w", encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                              errors="backslashreplace", closefd=False, buffering=1)
        self.reader = threading.Thread(target=self._read, args=(read_fd, self.saved), daemon=True,
                                       name="imgfeat-codec-warnings")
        self.reader.start()

    def stop(self) -> None:
        assert self.saved is not None and self.reader is not None
        if self.python_stderr is not None:
            sys.stderr.flush()
            sys.stderr = self.python_stderr  # type: ignore[assignment]
            self.python_stderr = None
        os.dup2(self.saved, 2)  # closes the pipe's last writer: the reader sees the end and stops
        self.reader.join(5)
        os.close(self.saved)
        self.saved, self.reader = None, None

    def _read(self, read_fd: int, out_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(1 << 16)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._line(line, out_fd)
            if pending:
                self._line(pending, out_fd)

    def _line(self, line: bytes, out_fd: int) -> None:
        if line.startswith(_MARK):
            kind, _, rest = line[len(_MARK):].partition(b" ")
            token, _, name = rest.partition(b" ")
            if kind == b"S":
                self.open[int(token)] = name.decode("utf-8", "surrogateescape")
            else:
                self.open.pop(int(token), None)
            return
        if LIBJPEG_LINE.match(line) and self.open:
            names = sorted(set(self.open.values()))
            where = names[0] if len(names) == 1 else "one of " + ", ".join(names)
            message = f"{where}: {line.decode('utf-8', 'replace').strip()} (decoded as PaddleX decodes it)"
            # explicit, with no registry: every file is named, in every run of a long-lived process
            warnings.warn_explicit(message, ImageWarning, __file__, 0, module=__name__, registry=None)
            return
        try:
            os.write(out_fd, line + b"\n")
        except OSError:
            pass


_CAPTURE = _Capture()
#: Whether the pipeline names libjpeg's warnings (:func:`enable`): the command line turns it on; a
#: Python program's own file descriptors are left alone unless it asks.
ENABLED = False


def enable(on: bool = True) -> None:
    global ENABLED
    ENABLED = on and os.environ.get("IMGFEAT_DEBUG", "") in ("", "0")  # debug: native output untouched


def _fileno(stream: object) -> Optional[int]:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


@contextmanager
def naming_codec_warnings() -> Iterator[None]:
    """Name the file of each libjpeg warning while active, when :data:`ENABLED` (see the module
    docstring). Nests; a process whose fd 2 is closed is left as it is."""
    try:
        os.fstat(2)
    except OSError:
        yield
        return
    if not ENABLED or threading.current_thread() is not threading.main_thread():
        yield
        return
    with _CAPTURE.lock:
        if _CAPTURE.users == 0:
            _CAPTURE.start()
        _CAPTURE.users += 1
    try:
        yield
    finally:
        with _CAPTURE.lock:
            _CAPTURE.users -= 1
            if _CAPTURE.users == 0:
                _CAPTURE.stop()


@contextmanager
def decoding(name: str) -> Iterator[None]:
    """Mark one decode (start and end) for the reader, when capturing."""
    if _CAPTURE.saved is None:
        yield
        return
    token = next(_CAPTURE.tokens)
    safe = name.replace("\n", " ").encode("utf-8", "surrogateescape")
    os.write(2, _MARK + b"S %d " % token + safe + b"\n")
    try:
        yield
    finally:
        os.write(2, _MARK + b"E %d\n" % token)
