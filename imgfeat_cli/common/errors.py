"""Domain errors and the exit-code table.

Every error the user can cause is one of these classes. The CLI maps each to a one-line
``Error: ...`` message plus a hint and to the documented exit code below, so scripts can branch on
the code and people can act on the hint. Keep this table in sync with README's "Exit codes".
"""
from __future__ import annotations

import errno
import os
import re
import textwrap
from contextlib import contextmanager
from typing import Iterator, Optional

EXIT_OK = 0
EXIT_ERROR = 1  # runtime failure: I/O, model, network, nothing could be done
EXIT_USAGE = 2  # bad command line or configuration; nothing was touched
EXIT_CHECK_FAILED = 3  # a check ran and failed: `check` (the dataset), `quantize` (the accuracy bar; nothing written)
EXIT_PARTIAL = 4  # `embed` finished but some inputs were skipped (see FILE.errors.jsonl)
EXIT_INTERRUPTED = 130  # Ctrl-C; long work saved what it could for --resume
EXIT_BROKEN_PIPE = 141  # stdout's reader went away (`imgfeat search ... | head`): silent, as a C tool killed by SIGPIPE

#: What Ctrl-C prints, wherever it lands (start-up, parsing, a command).
INTERRUPTED_MESSAGE = "interrupted (Ctrl-C)"


class ImgfeatError(Exception):
    """Base class: a message saying what went wrong and where, and a hint saying what to do.

    ``code`` names the kind of failure for scripts (the ``code`` of ``--json``'s error document,
    see :func:`error_document`); ``exit_code`` is the process's exit status."""

    exit_code = EXIT_ERROR
    code = "error"

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        """The error as ``--json`` prints it (the inside of :func:`error_document`)."""
        return error_fields(self.code, self.message, self.hint, self.exit_code)


class UsageError(ImgfeatError):
    """The request itself is wrong (arguments, paths that must exist, percentages...)."""

    code = "usage"
    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A configuration value or key is invalid; raised before any work starts."""

    code = "config"


class DatasetError(ImgfeatError):
    """A dataset cannot be read at all (as opposed to a check that reports problems)."""

    code = "dataset"


class CheckFailed(ImgfeatError):
    """A check found problems: `check` (error-severity dataset problems), `quantize` (the int8
    model missed the accuracy bar). Carries the full result for rendering."""

    code = "check_failed"
    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, result: object, hint: Optional[str] = None) -> None:
        super().__init__(message, hint)
        self.result = result


class ImageDecodeError(ImgfeatError):
    """One image could not be read or decoded."""

    code = "image"


class ModelError(ImgfeatError):
    """A model, its weights or its inference folder are missing, malformed or incompatible."""

    code = "model"


class ModelPathError(ModelError):
    """A model path that is plainly wrong (missing, a file where a folder is expected): the
    command line is wrong (exit 2), as for any other path of the wrong kind."""

    exit_code = EXIT_USAGE


class UnknownModel(ModelError):
    """A model name the registry does not know: the command line is wrong (exit 2)."""

    code = "unknown_model"
    exit_code = EXIT_USAGE


class IndexFormatError(ImgfeatError):
    """A gallery index folder is incomplete, corrupt or inconsistent (``vector.index`` vs ``id_map``)."""

    code = "index"


class DownloadError(ImgfeatError):
    """A download failed (HTTP status, checksum, offline, disk)."""

    code = "download"


class Unreachable(DownloadError):
    """The network did not deliver the file: ``IMGFEAT_OFFLINE``, no route, a refused connection, TLS,
    an HTTP error, retries exhausted. Callers that know a way round the network (a local model) say
    so; a checksum or archive failure is not this."""


class PartialFailure(ImgfeatError):
    """Work completed, but some inputs were skipped; the result is still written."""

    code = "partial"
    exit_code = EXIT_PARTIAL

    def __init__(self, message: str, result: object, hint: Optional[str] = None) -> None:
        super().__init__(message, hint)
        self.result = result


class Interrupted(ImgfeatError):
    """Ctrl-C during long work; what was done is kept for ``--resume``."""

    code = "interrupted"
    exit_code = EXIT_INTERRUPTED


class IOFailure(ImgfeatError):
    """An ordinary operating-system failure (permissions, disk full, read-only file system...)."""

    code = "io"


#: The ``code`` of failures that are no ImgfeatError: Typer's own usage errors, Ctrl-C anywhere,
#: and bugs (anything else that escapes a command).
CODE_USAGE, CODE_INTERRUPTED, CODE_INTERNAL = "usage", "interrupted", "internal"


def error_fields(code: str, message: str, hint: Optional[str], exit_code: int) -> dict:
    """The four fields every error document holds, in this order."""
    return {"code": code, "message": message, "hint": hint, "exit_code": exit_code}


def error_document(code: str, message: str, hint: Optional[str], exit_code: int) -> dict:
    """What a command run with ``--json`` prints on stdout when it fails before printing its
    result: ``{"error": {"code", "message", "hint", "exit_code"}}``, the same for every command,
    so a script reads one JSON document whatever happened (see docs/errors.md)."""
    return {"error": error_fields(code, message, hint, exit_code)}


#: How long a user-supplied value may be when an error message quotes it.
ECHO_LIMIT = 120


def clip(text: object, limit: int = ECHO_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out: error messages quote
    what the user gave, and a 100 KB value must not flood the terminal."""
    s = str(text)
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... ({len(s)} characters)"


def first_sentence(exc: BaseException, limit: int = 100) -> str:
    """A library's exception text as a reason inside one of our messages: its first sentence, cut at
    a word (pyarrow and numpy add advice that does not apply, or a second sentence cut mid-way)."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")
    return textwrap.shorten(first, limit, placeholder=" ...")


# errno -> (what happened, what to do, usage?). "Usage" means the path itself is wrong (missing,
# the wrong kind, too long): the user fixes the command line. The rest are I/O conditions.
_OS_ERRORS = {
    errno.ENOENT: ("{path} does not exist", "check the path (and that its folder exists)", True),
    errno.ENOTDIR: ("{path}: a part of this path is a file, not a folder", "check the path", True),
    errno.EISDIR: ("{path} is a folder, but a file is expected", "give a file path", True),
    errno.ENAMETOOLONG: ("file name too long: {path}",
                         "use a shorter name (most file systems allow 255 bytes per name)", True),
    errno.ELOOP: ("too many levels of symbolic links: {path}", "check the path for a symlink loop", True),
    errno.EEXIST: ("{path} already exists", "choose another path or remove it", True),
    errno.EACCES: ("permission denied: {path}",
                   "choose a location you may use, or fix its permissions", False),
    errno.EPERM: ("operation not permitted: {path}",
                  "choose a location you may use, or fix its permissions", False),
    errno.EROFS: ("{path} is on a read-only file system", "write somewhere else", False),
    errno.ENOSPC: ("no space left on the device holding {path}",
                   "free some space or write somewhere else, then rerun", False),
    errno.EDQUOT: ("disk quota exceeded writing {path}",
                   "free some space or write somewhere else, then rerun", False),
    errno.EMFILE: ("too many open files ({path})", "raise the limit (ulimit -n) or use fewer workers", False),
}


def _path_attr(exc: BaseException, attr: str) -> Optional[str]:
    name = getattr(exc, attr, None)
    if name is None:
        return None
    return os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)


def from_os_error(exc: OSError) -> ImgfeatError:
    """The one-line error for an ordinary ``OSError``: what, where (``exc.filename``), what to do.

    Paths that are plainly wrong (missing, the wrong kind, too long) are usage errors (exit 2);
    permissions, read-only and full disks are I/O errors (exit 1)."""
    what, hint, usage = _OS_ERRORS.get(exc.errno, ("{path}: {reason}", "check the path and the disk", False))
    reason = (exc.strerror or exc.__class__.__name__).lower()
    path = _path_attr(exc, "filename")
    if path is None:
        message = f"{reason} (the system named no file)"
    else:
        if exc.errno == errno.EEXIST and os.path.lexists(path) and not os.path.isdir(path):
            what, hint = "{path} is a file, but a folder is needed there", "check the path, or move the file away"
        message = what.format(path=clip(path), reason=reason)
        other = _path_attr(exc, "filename2")
        if other is not None:
            message += f" (moving it to {clip(other)})"
    return (UsageError if usage else IOFailure)(message, hint=hint)


def from_decode_error(exc: UnicodeDecodeError) -> ImgfeatError:
    """A text file that is not UTF-8: name the file (set by ``reading``) and the first bad byte."""
    path = _path_attr(exc, "filename")
    where = f"{clip(path)} is" if path else "a file is"
    bad = exc.object[exc.start:exc.start + 1].hex() if isinstance(exc.object, (bytes, bytearray)) else "?"
    return UsageError(f"{where} not UTF-8 text (byte 0x{bad} at offset {exc.start})",
                      hint="save it as UTF-8 (or check that it is the text file you meant)")


@contextmanager
def reading(path: object) -> Iterator[None]:
    """Attach ``path`` to a ``UnicodeDecodeError`` raised inside, so the error names the file."""
    try:
        yield
    except UnicodeDecodeError as exc:
        exc.filename = str(path)  # type: ignore[attr-defined]
        raise


def as_imgfeat_error(exc: BaseException) -> Optional[ImgfeatError]:
    """The domain error for ``exc`` when it is an ordinary failure, else ``None`` (a bug)."""
    if isinstance(exc, ImgfeatError):
        return exc
    if isinstance(exc, UnicodeDecodeError):
        return from_decode_error(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        return from_os_error(exc)
    return None
