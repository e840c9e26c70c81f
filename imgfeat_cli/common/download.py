"""Robust HTTP downloads and safe archive extraction.

* Bytes go to a part file beside the target, named after the URL (``NAME.<url-hash>.part``), so an
  interruption resumes with an HTTP ``Range`` request (restarting cleanly when the server ignores
  it) and a part file is never continued with another URL's bytes.
* The target is replaced only once the new file is complete and verified: a failed download
  (HTTP error, checksum, disk full) leaves whatever was there untouched.
* Retried, with exponential backoff, only what can succeed on a second try: timeouts, connections
  dropped mid-transfer, 429 and 5xx. A host that cannot be resolved, a refused connection or an
  unreachable network fail at once (offline machines learn it in milliseconds, not minutes), as
  do 404/403 and other 4xx. Each retry is reported through ``on_retry`` as it happens.
* The size is checked against ``Content-Length`` and the sha256 when known; a mismatching part is
  removed. The work happens under a lock kept in the cache (``common.locks``), so two processes
  fetching the same file end with one good copy and no lock file lands beside the user's.
* Archive members that are absolute, contain ``..``, are links pointing outside the target, or are
  device files/FIFOs are refused; extraction happens in a temp folder that is renamed into place.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import tarfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Optional
from urllib.parse import urlsplit

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import DownloadError, IOFailure, Unreachable, UsageError, clip
from imgfeat_cli.common.progress import ProgressFn, null_progress

RETRY_STATUS = {429, 500, 502, 503, 504}
_sleep = time.sleep  # between retries, unless download_file is given its own (tests pass a fake)
CHUNK = 1 << 16
#: errno values meaning "no route to the server right now": retrying at once will not help.
_UNREACHABLE = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def url_key(url: str) -> str:
    """A short, stable name for ``url`` (part files, cache folders)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]


def part_path(dest: Path, url: str) -> Path:
    """Where the bytes of ``url`` collect before they become ``dest``."""
    return dest.with_name(f"{dest.name}.{url_key(url)}.part")


def _causes(exc: BaseException) -> list:
    """``exc`` and what it wraps (requests -> urllib3 -> socket), depth-first."""
    out, todo, seen = [], [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out.append(e)
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        reason = getattr(e, "reason", None)
        todo.extend(x for x in (reason, e.__cause__, e.__context__) if isinstance(x, BaseException))
    return out


def unreachable(exc: BaseException) -> Optional[str]:
    """Why the server cannot be reached at all (DNS, refused, no route), or None if a retry may help."""
    for e in _causes(exc):
        if isinstance(e, socket.gaierror):
            return "the host name cannot be resolved (offline, or a typo in the host?)"
        if isinstance(e, OSError) and e.errno in _UNREACHABLE:
            return "connection refused" if e.errno == errno.ECONNREFUSED else "the network is unreachable"
    return None


class ChecksumMismatch(DownloadError):
    """The downloaded bytes are not the expected ones (``expected``/``got`` hold the sha256s)."""

    def __init__(self, message: str, expected: str, got: str, hint: Optional[str] = None) -> None:
        super().__init__(message, hint)
        self.expected, self.got = expected, got


class _Retry(Exception):
    def __init__(self, reason: str, retry_after: Optional[str] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _connect(session: "object", url: str, offset: int, timeout: float) -> "object":
    import requests

    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        return session.get(url, stream=True, timeout=timeout, headers=headers)  # type: ignore[attr-defined]
    except requests.exceptions.SSLError as exc:
        raise Unreachable(f"TLS error talking to {urlsplit(url).netloc}: {clip(exc, 200)}",
                          hint="check the system clock and certificates, or use a mirror (IMGFEAT_BASE_URL)") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        why = unreachable(exc)
        if why:
            raise Unreachable(f"cannot reach {urlsplit(url).netloc} for {clip(url)}: {why}",
                              hint="check the network connection (or IMGFEAT_BASE_URL for a mirror)") from None
        raise _Retry("timed out" if isinstance(exc, requests.Timeout) else f"connection failed ({exc.__class__.__name__})") from None
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema) as exc:
        raise UsageError(f"{clip(url)} is not a valid URL ({clip(exc, 150)})", hint="check the URL") from None
    except requests.RequestException as exc:  # too many redirects, a malformed answer...
        raise Unreachable(f"cannot download {clip(url)}: {exc.__class__.__name__}: {clip(exc, 200)}",
                          hint="check the URL (or IMGFEAT_BASE_URL for a mirror)") from None


class Deadline:
    """The time left for a whole download (``None``: no limit), retries and waits included."""

    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def left(self) -> Optional[float]:
        return None if self.end is None else self.end - time.monotonic()

    def cap(self, timeout: float) -> float:
        """``timeout`` for one wait on the server, never past the deadline."""
        left = self.left()
        return timeout if left is None else max(0.01, min(timeout, left))

    def check(self, url: str, part: Path) -> None:
        left = self.left()
        if left is not None and left <= 0:
            raise DownloadError(f"download of {clip(url)} stopped at its deadline of {self.seconds:g} s "
                                f"({part_state(part)})", hint=resume_hint(part))


def part_state(part: Path) -> str:
    """What a download leaves behind, for its error message."""
    try:
        size = part.stat().st_size
    except OSError:
        return "nothing was kept"
    return f"{size:,} bytes kept in {part}"


def resume_hint(part: Path, first: str = "rerun the same command") -> str:
    """What to do with what a failed download left: resume it, or drop it."""
    if not part.exists():
        return f"{first} (with a larger --deadline or --timeout if the server is slow)"
    return f"{first} to resume from there (with a larger --deadline or --timeout if the server is slow), or " \
           f"delete {part} to drop what was fetched"


def _attempt(session: "object", url: str, part: Path, timeout: float, progress: ProgressFn, label: str,
             deadline: Optional[Deadline] = None) -> None:
    """One GET, resuming from ``part``'s size. Raises ``_Retry`` for retryable failures."""
    import requests

    deadline = deadline or Deadline(None)
    offset = part.stat().st_size if part.exists() else 0
    resp = _connect(session, url, offset, deadline.cap(timeout))
    with resp:  # type: ignore[attr-defined]
        status = resp.status_code  # type: ignore[attr-defined]
        if status == 416 and offset:  # nothing left to send, or a stale part: restart
            part.unlink()
            raise _Retry("HTTP 416 for the remaining range; restarting")
        if status in RETRY_STATUS:
            raise _Retry(f"HTTP {status}", retry_after=resp.headers.get("Retry-After"))  # type: ignore[attr-defined]
        if status not in (200, 206):
            raise Unreachable(f"HTTP {status} for {clip(url)}",
                              hint="check the URL (or IMGFEAT_BASE_URL for a mirror)")
        if status == 200 and offset:
            offset = 0  # the server ignored Range: start over
        length = resp.headers.get("Content-Length")  # type: ignore[attr-defined]
        expected = offset + int(length) if length is not None and length.isdigit() else None
        done = offset
        try:
            with open(part, "ab" if offset else "wb") as fh:
                progress(label, done, expected)
                for chunk in resp.iter_content(CHUNK):  # type: ignore[attr-defined]
                    fh.write(chunk)
                    done += len(chunk)
                    progress(label, done, expected)
                    deadline.check(url, part)  # a server trickling bytes never times out a read
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retry(f"connection dropped after {done} bytes ({exc.__class__.__name__})") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise IOFailure(f"disk full while writing {part} ({part_state(part)})",
                                hint=resume_hint(part, "free space (or set IMGFEAT_HOME to a larger disk), then rerun "
                                                 "the same command")) from None
            raise
        if expected is not None and done != expected:
            raise _Retry(f"got {done} of {expected} bytes")


def download_file(url: str, dest: Path, sha256: Optional[str] = None, retries: int = 4, timeout: float = 30.0,
                  backoff: float = 1.0, progress: ProgressFn = null_progress,
                  sleep: Optional[Callable[[float], None]] = None,
                  on_retry: Optional[Callable[[str], None]] = None,
                  reuse: Optional[Callable[[Path], bool]] = None,
                  on_replaced: Optional[Callable[[Path], None]] = None,
                  deadline: Optional[float] = None) -> Path:
    """Download ``url`` to ``dest`` (see module docstring) and return ``dest``.

    ``timeout``: seconds to wait for the server to connect or to send the next bytes; ``deadline``:
    seconds for the whole download, retries and waits included (``None``: no limit); past it the
    part file is kept for a resume and the error says how big it is.

    Under the lock, ``reuse(dest)`` decides whether an existing ``dest`` already is the content
    (default: only when ``sha256`` is given and matches); otherwise the file is downloaded again
    and replaces ``dest`` only when complete and verified, and ``on_replaced(dest)`` runs, still
    under the lock (the cache records it there, so a process that waited sees the record)."""
    import requests

    from imgfeat_cli.common.locks import path_lock

    part = part_path(dest, url)
    label = f"Downloading {dest.name}"
    want = sha256.lower() if sha256 else None
    with path_lock(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_file() and (reuse(dest) if reuse else (want is not None and sha256_file(dest) == want)):
            return dest
        clock = Deadline(deadline)
        with requests.Session() as session:
            session.headers["User-Agent"] = "imgfeat"
            for attempt in range(retries + 1):
                try:
                    _attempt(session, url, part, timeout, progress, label, clock)
                    break
                except _Retry as exc:
                    clock.check(url, part)
                    if attempt == retries:
                        raise Unreachable(f"download of {clip(url)} failed after {retries + 1} attempts: {exc.reason} "
                                          f"({part_state(part)})", hint=resume_hint(part, "check the network and "
                                                                                      "rerun the same command")) from None
                    delay = backoff * (2 ** attempt)
                    if exc.retry_after and exc.retry_after.isdigit():
                        delay = max(delay, min(float(exc.retry_after), 60.0))
                    left = clock.left()
                    if left is not None:
                        delay = max(0.0, min(delay, left))
                    if on_retry is not None:
                        on_retry(f"{exc.reason} from {urlsplit(url).netloc}; retrying in {delay:.0f} s "
                                 f"(attempt {attempt + 2} of {retries + 1})")
                    (sleep or _sleep)(delay)
        if want is not None:
            got = sha256_file(part)
            if got != want:
                part.unlink()
                raise ChecksumMismatch(f"checksum mismatch for {clip(url)}: expected sha256 {want}, got {got}; "
                                       "the download was removed" + (f", {dest} is unchanged" if dest.exists() else ""),
                                       want, got, hint="retry; if it persists the server or mirror holds another file")
        os.replace(part, dest)
        if on_replaced is not None:
            on_replaced(dest)
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
