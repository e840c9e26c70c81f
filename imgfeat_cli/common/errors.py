"""Domain errors and the exit-code table.

Every error the user can cause is one of these classes. The CLI maps each to a one-line
``Error: ...`` message plus a hint and to the documented exit code below, so scripts can branch on
the code and people can act on the hint. Keep this table in sync with README's "Exit codes".
"""
from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_ERROR = 1  # runtime failure: I/O, model, network, nothing could be done
EXIT_USAGE = 2  # bad command line or configuration; nothing was touched
EXIT_CHECK_FAILED = 3  # `check` ran and the dataset failed validation
EXIT_PARTIAL = 4  # `embed` finished but some inputs were skipped (see FILE.errors.jsonl)
EXIT_INTERRUPTED = 130  # Ctrl-C; long work saved what it could for --resume


class ImgfeatError(Exception):
    """Base class: a message saying what went wrong and where, and a hint saying what to do."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ImgfeatError):
    """The request itself is wrong (arguments, paths that must exist, percentages...)."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A configuration value or key is invalid; raised before any work starts."""


class DatasetError(ImgfeatError):
    """A dataset cannot be read at all (as opposed to a check that reports problems)."""


class CheckFailed(ImgfeatError):
    """`check` found error-severity problems. Carries the full result for rendering."""

    exit_code = EXIT_CHECK_FAILED

    def __init__(self, message: str, result: object, hint: Optional[str] = None) -> None:
        super().__init__(message, hint)
        self.result = result


class ImageDecodeError(ImgfeatError):
    """One image could not be read or decoded."""


class ModelError(ImgfeatError):
    """A model, its weights or its inference folder are missing, malformed or incompatible."""


class IndexFormatError(ImgfeatError):
    """A gallery index folder is incomplete, corrupt or inconsistent (``vector.index`` vs ``id_map``)."""


class DownloadError(ImgfeatError):
    """A download failed (HTTP status, checksum, offline, disk)."""


class PartialFailure(ImgfeatError):
    """Work completed, but some inputs were skipped; the result is still written."""

    exit_code = EXIT_PARTIAL

    def __init__(self, message: str, result: object, hint: Optional[str] = None) -> None:
        super().__init__(message, hint)
        self.result = result


class Interrupted(ImgfeatError):
    """Ctrl-C during long work; what was done is kept for ``--resume``."""

    exit_code = EXIT_INTERRUPTED
