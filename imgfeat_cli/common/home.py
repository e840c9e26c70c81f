"""imgfeat's home folder (``$IMGFEAT_HOME``, default ``~/.cache/imgfeat``): where it is, making its
sub-folders, and the one error for a home that cannot be written. Below the download cache and the
lock files, which both live in it."""
from __future__ import annotations

import os
from pathlib import Path

from imgfeat_cli.common.errors import ImgfeatError, IOFailure, UsageError, clip


def cache_root() -> Path:
    return Path(os.environ.get("IMGFEAT_HOME") or Path.home() / ".cache" / "imgfeat").expanduser()


def cache_dir(*parts: str) -> Path:
    """``cache_root()/parts...``, created; a cache that cannot be written is one clear error."""
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise home_error(exc) from None
    return path


def home_error(exc: OSError) -> ImgfeatError:
    """The error for a cache folder that cannot be created or written."""
    reason = (exc.strerror or exc.__class__.__name__).lower()
    if os.environ.get("IMGFEAT_HOME"):
        return UsageError(f"IMGFEAT_HOME={clip(cache_root())} is not a writable folder ({reason}: "
                          f"{clip(exc.filename or cache_root())})",
                          hint="point IMGFEAT_HOME at a folder you can write, or unset it to use ~/.cache/imgfeat")
    return IOFailure(f"the download cache {clip(cache_root())} is not a writable folder ({reason})",
                     hint="set IMGFEAT_HOME to a folder you can write")


def offline() -> bool:
    return os.environ.get("IMGFEAT_OFFLINE", "").lower() in ("1", "true", "yes", "on")
