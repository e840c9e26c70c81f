"""The download cache: a layout a person can read, and the manifest of verified checksums.

``$IMGFEAT_HOME`` (default ``~/.cache/imgfeat``)::

    models/<name>/<tag>/inference/     unpacked official inference model
    models/<name>/<name>_pretrained.pdparams
    models/<name>/<name>_backbone_LAION400M_pretrained.pdparams
    datasets/<name>/                   unpacked demo dataset
    onnx/, hpi/                         converted models and engine decisions (models.onnx, models.autoselect)
    files/<basename>                   `imgfeat download url` without --out
    manifest.json                      url -> sha256, size, path (recorded on first download)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from imgfeat_cli.common import fsutil
from imgfeat_cli.common.errors import DownloadError, UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress

DATASETS = {
    "Inshop_examples": "data/Inshop_examples.tar",
    "image_classification_labelme_examples": "data/image_classification_labelme_examples.tar",
}


def cache_root() -> Path:
    return Path(os.environ.get("IMGFEAT_HOME") or Path.home() / ".cache" / "imgfeat").expanduser()


def offline() -> bool:
    return os.environ.get("IMGFEAT_OFFLINE", "").lower() in ("1", "true", "yes", "on")


#: Where official files live; ``IMGFEAT_BASE_URL`` points at a mirror (or a test server).
BASE_URL = "https://paddle-model-ecology.bj.bcebos.com/paddlex/"


def base_url() -> str:
    return os.environ.get("IMGFEAT_BASE_URL", BASE_URL).rstrip("/") + "/"


def _manifest_path() -> Path:
    return cache_root() / "manifest.json"


def read_manifest() -> Dict[str, Dict[str, Any]]:
    try:
        return json.loads(_manifest_path().read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _record(url: str, path: Path, sha256: str) -> None:
    from filelock import FileLock

    with FileLock(str(_manifest_path()) + ".lock"):
        data = read_manifest()
        data[url] = {"sha256": sha256, "size": path.stat().st_size, "path": str(path)}
        fsutil.write_json(_manifest_path(), data)


def fetch(url: str, dest: Path, sha256: Optional[str] = None, progress: ProgressFn = null_progress,
          retries: int = 4, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` unless present; verify against the given or recorded sha256."""
    from imgfeat_cli.common.download import download_file, sha256_file

    known = sha256 or read_manifest().get(url, {}).get("sha256")
    if dest.exists() and (known is None or sha256_file(dest) == known.lower()):
        return dest
    if offline():
        raise DownloadError(f"{dest.name} is not cached and IMGFEAT_OFFLINE is set",
                            hint=f"unset IMGFEAT_OFFLINE or place the file at {dest}")
    download_file(url, dest, known, retries=retries, timeout=timeout, progress=progress)
    _record(url, dest, known or sha256_file(dest))
    return dest


def fetch_and_extract(url: str, archive: Path, target: Path, progress: ProgressFn) -> Path:
    from imgfeat_cli.common.download import extract_archive

    fetch(url, archive, progress=progress)
    extract_archive(archive, target)
    archive.unlink()
    return target


def ensure_dataset(name: str, progress: ProgressFn = null_progress) -> Path:
    if name not in DATASETS:
        import difflib

        close = difflib.get_close_matches(name, list(DATASETS), n=1, cutoff=0.4)
        raise UsageError(f"unknown dataset {name!r}",
                         hint=f"did you mean {close[0]}?" if close else f"known: {', '.join(DATASETS)}")
    target = cache_root() / "datasets" / name
    if target.is_dir() and any(target.iterdir()):
        return target
    url = base_url() + DATASETS[name]
    return fetch_and_extract(url, target.parent / f"{name}.tar", target, progress)


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
