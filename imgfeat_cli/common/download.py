"""Robust HTTP downloads and safe archive extraction.

* Bytes go to ``<target>.part``; an interruption resumes with an HTTP ``Range`` request (and
  restarts cleanly when the server ignores it).
* Connection errors, timeouts, 429 and 5xx are retried with exponential backoff, a bounded number
  of times; 404/403 and other 4xx fail at once with the status and URL.
* The size is checked against ``Content-Length``; the sha256 is verified when known (given, or
  recorded in the cache manifest after the first download) and a mismatching file is removed.
* The finished file is renamed into place atomically, under a file lock, so two processes fetching
  the same file end with one good copy.
* Archive members that are absolute, contain ``..``, are links pointing outside the target, or are
  device files/FIFOs are refused; extraction happens in a temp folder that is renamed into place.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tarfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Optional

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import DownloadError
from imgfeat_cli.common.progress import ProgressFn, null_progress

RETRY_STATUS = {429, 500, 502, 503, 504}
CHUNK = 1 << 16


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _attempt(session: "object", url: str, part: Path, timeout: float, progress: ProgressFn, label: str) -> None:
    """One GET, resuming from ``part``'s size. Raises ``_Retry`` for retryable failures."""
    import requests

    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        resp = session.get(url, stream=True, timeout=timeout, headers=headers)  # type: ignore[attr-defined]
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retry(f"{exc.__class__.__name__}") from None
    with resp:
        if resp.status_code == 416 and offset:  # nothing left to send, or a stale part: restart
            part.unlink()
            raise _Retry("HTTP 416 for the remaining range; restarting")
        if resp.status_code in RETRY_STATUS:
            raise _Retry(f"HTTP {resp.status_code}", retry_after=resp.headers.get("Retry-After"))
        if resp.status_code not in (200, 206):
            raise DownloadError(f"HTTP {resp.status_code} for {url}",
                                hint="check the URL (or IMGFEAT_BASE_URL for a mirror)")
        if resp.status_code == 200 and offset:
            offset = 0  # the server ignored Range: start over
        length = resp.headers.get("Content-Length")
        expected = offset + int(length) if length is not None and length.isdigit() else None
        mode = "ab" if offset else "wb"
        done = offset
        try:
            with open(part, mode) as fh:
                progress(label, done, expected)
                for chunk in resp.iter_content(CHUNK):
                    fh.write(chunk)
                    done += len(chunk)
                    progress(label, done, expected)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retry(f"connection dropped after {done} bytes ({exc.__class__.__name__})") from None
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DownloadError(f"disk full while writing {part}", hint="free space or set IMGFEAT_HOME "
                                    "to a larger disk") from None
            raise
        if expected is not None and done != expected:
            raise _Retry(f"got {done} of {expected} bytes")


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: Optional[str] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def download_file(url: str, dest: Path, sha256: Optional[str] = None, retries: int = 4, timeout: float = 30.0,
                  backoff: float = 1.0, progress: ProgressFn = null_progress,
                  sleep: Callable[[float], None] = time.sleep) -> Path:
    """Download ``url`` to ``dest`` (see module docstring). Returns ``dest``."""
    import requests
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    label = f"Downloading {dest.name}"
    with FileLock(str(dest) + ".lock"):
        if dest.exists():
            if sha256 is None or sha256_file(dest) == sha256.lower():
                return dest
            dest.unlink()
        with requests.Session() as session:
            session.headers["User-Agent"] = "imgfeat"
            for attempt in range(retries + 1):
                try:
                    _attempt(session, url, part, timeout, progress, label)
                    break
                except _Retry as exc:
                    if attempt == retries:
                        raise DownloadError(f"download of {url} failed after {retries + 1} attempts: {exc.reason}",
                                            hint="check the network and rerun: the download resumes") from None
                    delay = backoff * (2 ** attempt)
                    if exc.retry_after and exc.retry_after.isdigit():
                        delay = max(delay, min(float(exc.retry_after), 60.0))
                    sleep(delay)
        if sha256 is not None:
            got = sha256_file(part)
            if got != sha256.lower():
                part.unlink()
                raise DownloadError(f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {got}; "
                                    "the file was removed", hint="retry; if it persists the mirror may be corrupt")
        os.replace(part, dest)
    return dest


def _check_member(name: str, target: Path) -> PurePosixPath:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DownloadError(f"archive member {name!r} has an absolute path; refusing to extract")
    if ".." in p.parts:
        raise DownloadError(f"archive member {name!r} contains '..'; refusing to extract")
    return p


def extract_archive(archive: Path, target: Path, strip_single_root: bool = True) -> Path:
    """Safely extract a tar (any compression) or zip into ``target`` (replaced atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = fsutil.temp_dir(target)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    _check_member(info.filename, tmp)
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise DownloadError(f"archive member {info.filename!r} is a symlink; refusing to extract")
                zf.extractall(tmp)
        elif tarfile.is_tarfile(str(archive)):
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    rel = _check_member(m.name, tmp)
                    if m.isdev() or m.isfifo():
                        raise DownloadError(f"archive member {m.name!r} is a device or FIFO; refusing to extract")
                    if m.issym() or m.islnk():
                        link = PurePosixPath(m.linkname)
                        resolved = (rel.parent / link) if m.issym() else link
                        if link.is_absolute() or ".." in PurePosixPath(os.path.normpath(str(resolved))).parts:
                            raise DownloadError(f"archive member {m.name!r} links outside the target "
                                                f"({m.linkname}); refusing to extract")
                kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tf.extractall(tmp, members=members, **kwargs)  # type: ignore[arg-type]
        else:
            raise DownloadError(f"{archive} is neither a tar nor a zip archive")
        root = tmp
        entries = [p for p in tmp.iterdir()]
        if strip_single_root and len(entries) == 1 and entries[0].is_dir():
            root = entries[0]
        if target.exists():
            shutil.rmtree(target)
        os.replace(root, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
