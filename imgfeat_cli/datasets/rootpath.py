"""Paths that must stay inside a dataset root: a listed ``../x.jpg``, an absolute path elsewhere, or a
symlink whose target lies outside the root are refused (code ``path_escapes_root``).

Converters read a user's tree and write a dataset whose list files name images relative to its
root; an image outside the root would make the dataset depend on files it does not hold (and a
hostile list could pull ``/etc/shadow`` into ``--out``). ``check`` applies only the textual rule
(:func:`imgfeat_cli.datasets.dataset.resolve_inside`), since a checked dataset may keep ``images/``
on shared storage; converters apply both.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple

from imgfeat_cli.datasets.dataset import resolve_inside

ESCAPES = "path_escapes_root"


def real_root(root: Path) -> str:
    """The root's real path, the reference every :func:`escape_reason` call compares against."""
    return os.path.realpath(root)


def _inside(root_real: str, real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def escape_reason(root_real: str, path: Path) -> Optional[str]:
    """Why ``path`` (inside the root as written) leaves the root once symlinks are followed, or
    ``None`` when its real location is inside ``root_real``."""
    real = os.path.realpath(path)
    return None if _inside(root_real, real) else f"is a symlink to {real}, outside the root {root_real}"


def listed_path(root: Path, root_real: str, text: str) -> Tuple[Optional[Path], Optional[str], str]:
    """``(path, None, relative path)`` for a path written in a list (relative to ``root``; an absolute
    one must lie inside it), or ``(None, why, text)`` when it leaves the root by ``..``, by being
    absolute elsewhere, or through a symlink."""
    if os.path.isabs(text):
        real = os.path.realpath(text)
        if not _inside(root_real, real):
            return None, f"is an absolute path outside the root {root_real}", text
        text = os.path.relpath(real, root_real)
    full = resolve_inside(root, text)
    if full is None:
        return None, "points outside the root (..)", text
    why = escape_reason(root_real, full)
    return (None, why, text) if why else (full, None, full.relative_to(root).as_posix())
