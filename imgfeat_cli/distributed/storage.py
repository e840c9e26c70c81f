"""Listing and reading images on any filesystem pyarrow opens (local folders, ``s3://``, ``hdfs://``,
``file://`` URIs); the location helpers themselves live in :mod:`imgfeat_cli.common.remote`.

Cluster nodes rarely share a disk, so the Ray engine reads inputs and writes its output through
:mod:`pyarrow.fs`: the same calls serve a laptop folder and a bucket. Credentials come from the
usual places (the AWS variables, instance metadata, ``~/.aws``), as pyarrow finds them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple
from urllib.parse import urlsplit

from imgfeat_cli.common.errors import ImageDecodeError, UsageError
from imgfeat_cli.common.remote import is_uri, iter_files, join, resolve, short_error as _short, uri_of
from imgfeat_cli.imaging.decode import is_image_path

__all__ = ["Reader", "is_uri", "iter_files", "join", "list_images", "resolve", "uri_of"]


def list_images(location: str) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Image files at ``location`` (a file, or a folder walked recursively, sorted) as URIs, and
    ``(location, reason)`` when it cannot be listed. Hidden entries are skipped, as locally."""
    from pyarrow import fs

    filesystem, path = resolve(location)
    try:
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            return [], [(location, f"{location}: does not exist")]
        if info.type != fs.FileType.Directory:
            return [location], []
        entries = filesystem.get_file_info(fs.FileSelector(path, recursive=True))
    except OSError as exc:
        return [], [(location, f"{location}: cannot list ({_short(exc)})")]
    rel = len(path.rstrip("/")) + 1
    found = sorted(uri_of(location, e.path) for e in entries if e.type == fs.FileType.File
                   and is_image_path(e.path) and not any(part.startswith(".") for part in e.path[rel:].split("/")))
    return found, []


class Reader:
    """Reads whole files by URI, with one filesystem client per bucket or host (creating an S3
    client costs far more than reading a small image)."""

    def __init__(self) -> None:
        self._clients: Dict[str, Tuple[Any, bool]] = {}  # "scheme://netloc" -> (filesystem, path keeps netloc)

    def _locate(self, uri: str) -> Tuple[Any, str]:
        parts = urlsplit(uri)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self._clients:
            filesystem, path = resolve(uri)
            self._clients[key] = (filesystem, bool(parts.netloc) and path.startswith(parts.netloc))
            return filesystem, path
        filesystem, keeps_netloc = self._clients[key]  # s3/gs paths are "bucket/key", others "/path"
        return filesystem, (parts.netloc + parts.path if keeps_netloc else parts.path)

    def read(self, uri: str, max_bytes: int) -> bytes:
        """The bytes of ``uri``; a one-line :class:`ImageDecodeError` when missing, too large or unreadable."""
        try:
            filesystem, path = self._locate(uri)
            with filesystem.open_input_file(path) as fh:
                size = fh.size()
                if size > max_bytes:
                    raise ImageDecodeError(f"{uri}: {size >> 20} MB, over the {max_bytes >> 20} MB limit per file")
                return fh.read()
        except FileNotFoundError:
            raise ImageDecodeError(f"{uri}: does not exist") from None
        except (OSError, ValueError, UsageError) as exc:
            raise ImageDecodeError(f"{uri}: cannot read ({_short(exc)})") from None
