"""The download cache: a layout a person can read, and the manifest of verified checksums.

``$IMGFEAT_HOME`` (default ``~/.cache/imgfeat``)::

    models/<name>/<tag>/inference/     unpacked official inference model
    models/<name>/<name>_pretrained.pdparams
    models/<name>/<name>_backbone_LAION400M_pretrained.pdparams
    datasets/<name>/                   unpacked demo dataset
    onnx/, hpi/                        converted models and engine decisions (models.onnx, models.autoselect)
    files/<url-hash>/<basename>        `imgfeat download url` without --out (one folder per URL)
    manifest.json                      url -> sha256, size, path, how it was verified, when
    .locks/                            lock files (common.locks)

A manifest entry is written only once its file is complete and verified, and for an archive only
once it has been unpacked, so a broken download is never recorded as good. A later download of
the same URL must match the recorded sha256 (the server's file changed, or a mirror serves
another one); ``--refresh`` forgets the record. Entries written by imgfeat versions that recorded
before verifying carry no ``verified`` field and are not trusted.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import DownloadError, Unreachable, UsageError, clip
from imgfeat_cli.common.home import cache_dir, cache_root, home_error, offline  # noqa: F401 (the cache's API)
from imgfeat_cli.common.progress import ProgressFn, null_progress

DATASETS = {
    "Inshop_examples": "data/Inshop_examples.tar",
    "image_classification_labelme_examples": "data/image_classification_labelme_examples.tar",
}

Log = Optional[Callable[[str], None]]


#: Where official files live; ``IMGFEAT_BASE_URL`` points at a mirror (or a test server).
BASE_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/"


def base_url() -> str:
    return os.environ.get("IMGFEAT_BASE_URL", BASE_URL).rstrip("/") + "/"


def url_file(url: str) -> Path:
    """Where ``imgfeat download url URL`` puts a file without ``--out``: a folder per URL, so
    ``.../a/model.bin`` and ``.../b/model.bin`` never share a cache entry."""
    from imgfeat_cli.common.download import url_key

    name = url.split("?")[0].split("#")[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    return cache_root() / "files" / url_key(url) / name


def _manifest_path() -> Path:
    return cache_root() / "manifest.json"


def read_manifest() -> Dict[str, Dict[str, Any]]:
    try:
        data = json.loads(_manifest_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, unreadable or damaged: nothing is known
        return {}
    return data if isinstance(data, dict) else {}


def trusted_entry(url: str) -> Optional[Dict[str, Any]]:
    """The manifest entry of ``url`` when it was recorded after verification (see module doc)."""
    entry = read_manifest().get(url)
    return entry if isinstance(entry, dict) and entry.get("verified") and entry.get("sha256") else None


def _record(url: str, path: Path, sha256: str, size: int, how: str) -> None:
    from imgfeat_cli.common.locks import path_lock

    cache_dir()
    with path_lock(_manifest_path()):
        data = read_manifest()
        data[url] = {"sha256": sha256, "size": size, "path": str(path), "verified": how,
                     "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            fsutil.write_json(_manifest_path(), data)
        except OSError as exc:
            raise home_error(exc) from None


def _is_content(path: Path, url: str, sha256: Optional[str], entry: Optional[Dict[str, Any]]) -> bool:
    """Whether ``path`` is known to hold ``url``'s content: its sha256 is the one asked for, or the
    manifest recorded this very file for this URL and it still matches."""
    from imgfeat_cli.common.download import sha256_file

    if not path.is_file():
        return False
    if sha256:
        return sha256_file(path) == sha256.lower()
    return (entry is not None and os.path.abspath(entry.get("path", "")) == os.path.abspath(path)
            and path.stat().st_size == entry.get("size") and sha256_file(path) == entry["sha256"])


def _download(url: str, dest: Path, sha256: Optional[str], progress: ProgressFn, log: Log,
              refresh: bool, refresh_hint: Optional[str], reuse: Callable[[Path], bool],
              on_replaced: Callable[[Path, str], None], retries: int = 4, timeout: float = 30.0,
              deadline: Optional[float] = None) -> None:
    """Download ``url`` to ``dest`` verified against the given or recorded sha256, then call
    ``on_replaced(dest, sha256)`` under the download's lock."""
    from imgfeat_cli.common.download import ChecksumMismatch, download_file, sha256_file

    if offline():
        raise Unreachable(f"{dest.name} is not cached and IMGFEAT_OFFLINE is set",
                          hint=f"unset IMGFEAT_OFFLINE or place the file at {dest}")
    entry = None if refresh else trusted_entry(url)
    known = sha256 or (entry or {}).get("sha256")
    cache_dir()  # a cache that cannot be written fails here, in one line, before any transfer
    try:
        download_file(url, dest, known, retries=retries, timeout=timeout, progress=progress, on_retry=log,
                      reuse=reuse, on_replaced=lambda p: on_replaced(p, known or sha256_file(p)), deadline=deadline)
    except ChecksumMismatch as exc:
        if sha256 or entry is None:
            raise
        again = refresh_hint or f"imgfeat download url {url} --refresh"
        raise DownloadError(f"{clip(url)} is not the file recorded when it was first downloaded "
                            f"({entry.get('recorded', 'earlier')}): sha256 {exc.got}, recorded {exc.expected}",
                            hint=f"if the server's file was replaced on purpose, forget the record: {again}") from None


def fetch(url: str, dest: Path, sha256: Optional[str] = None, progress: ProgressFn = null_progress,
          retries: int = 4, timeout: float = 30.0, log: Log = None, refresh: bool = False,
          refresh_hint: Optional[str] = None, deadline: Optional[float] = None) -> Path:
    """``dest`` holding ``url``'s content: reused when known to be it, else downloaded (replacing
    ``dest`` only once complete and verified) and recorded. ``refresh`` forgets what was known."""
    def reuse(path: Path) -> bool:  # asked again under the lock: another process may have finished
        return not refresh and _is_content(path, url, sha256, trusted_entry(url))

    def record(path: Path, digest: str) -> None:
        _record(url, path, digest, path.stat().st_size, "sha256 given" if sha256 else "first download")

    if not reuse(dest):
        _download(url, dest, sha256, progress, log, refresh, refresh_hint, reuse, record, retries, timeout, deadline)
    return dest


def fetch_and_extract(url: str, archive: Path, target: Path, ready: Callable[[Path], bool],
                      progress: ProgressFn = null_progress, log: Log = None, refresh: bool = False,
                      refresh_hint: Optional[str] = None) -> Path:
    """``target`` unpacked from the archive ``url``, unless ``ready(target)`` already. Recorded only
    once unpacked; an archive that does not unpack is removed and not recorded, so a fixed mirror
    is picked up next time. The target's lock makes concurrent first uses unpack once."""
    from imgfeat_cli.common.download import extract_archive
    from imgfeat_cli.common.locks import path_lock

    def unpack(path: Path, digest: str) -> None:
        size = path.stat().st_size
        try:
            extract_archive(path, target)
        except DownloadError as exc:
            raise DownloadError(f"{clip(url)} is not a usable archive: {exc.message}; the download was removed",
                                hint="rerun to download it again; if it persists the server or mirror holds a "
                                     "broken file") from None
        finally:
            path.unlink(missing_ok=True)
        _record(url, target, digest, size, "unpacked")

    with path_lock(target):
        if not refresh and ready(target):
            return target
        _download(url, archive, None, progress, log, refresh, refresh_hint, lambda p: False, unpack)
    return target


def ensure_dataset(name: str, progress: ProgressFn = null_progress, log: Log = None, refresh: bool = False) -> Path:
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1, cutoff=0.4)
        raise UsageError(f"unknown dataset {name!r}",
                         hint=f"did you mean {close[0]}?" if close else f"known: {', '.join(DATASETS)}")
    target = cache_root() / "datasets" / name

    def ready(path: Path) -> bool:
        return path.is_dir() and any(path.iterdir())

    if not refresh and ready(target):
        return target
    url = base_url() + DATASETS[name]
    return fetch_and_extract(url, cache_dir("datasets") / f"{name}.tar", target, ready, progress, log, refresh,
                             refresh_hint=f"imgfeat download dataset {name} --refresh")


@dataclass
class CacheEntry:
    kind: str
    name: str
    path: str
    cached: bool
    size: int
    url: Optional[str]


def entry_size(path: Path) -> int:
    """Bytes of a cached file or folder (0 when absent)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def dataset_entries() -> List[CacheEntry]:
    out: List[CacheEntry] = []
    for name, rel in DATASETS.items():
        path = cache_root() / "datasets" / name
        out.append(CacheEntry("dataset", name, str(path), path.exists(), entry_size(path), base_url() + rel))
    return out
