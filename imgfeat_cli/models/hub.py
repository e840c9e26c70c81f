"""Official model files: where each lives in the download cache, and fetching it on first use."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

from imgfeat_cli.common.cache import (CacheEntry, Log, cache_dir, cache_root, entry_size, fetch, fetch_and_extract,
                                      offline)
from imgfeat_cli.common.errors import DownloadError, ModelError, UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress

KINDS = ("inference", "pretrained", "backbone")


def inference_dir(name: str, tag: str) -> Path:
    return cache_root() / "models" / name / tag / "inference"


#: What to do when an official model cannot be fetched, for callers that can use a local model.
LOCAL_MODEL_HINT = "with no network, pass --model-dir DIR (an inference folder) or --weights X.pdparams"


def ensure_inference_model(spec: Any, tag: str, progress: ProgressFn = null_progress, log: Log = None,
                           refresh: bool = False, hint: Optional[str] = LOCAL_MODEL_HINT) -> Path:
    """The unpacked official inference folder for ``spec``/``tag``, downloading it if needed.
    ``hint`` says what to do instead when it cannot be fetched (the caller knows its options)."""
    target = inference_dir(spec.name, tag)

    def ready(path: Path) -> bool:
        return (path / "inference.pdiparams").is_file()

    if not refresh and ready(target):
        return target
    if offline():
        raise ModelError(f"model {spec.name} ({tag}) is not in the cache {cache_root()} and IMGFEAT_OFFLINE is set",
                         hint="; ".join(filter(None, [hint, "or unset IMGFEAT_OFFLINE to download it"])))
    url = spec.pretrained_cfg(tag).inference_url
    try:
        return fetch_and_extract(url, cache_dir("models", spec.name, tag) / f"{spec.name}_infer.tar", target, ready,
                                 progress, log, refresh, refresh_hint=f"imgfeat download model {spec.name} --refresh")
    except DownloadError as exc:
        raise ModelError(f"cannot get model {spec.name}: {exc.message}",
                         hint="; ".join(filter(None, [exc.hint, hint]))) from None


def ensure_model_file(spec: Any, kind: str, tag: str, progress: ProgressFn = null_progress, log: Log = None,
                      refresh: bool = False, hint: Optional[str] = LOCAL_MODEL_HINT) -> Path:
    """Fetch ``inference`` (folder), ``pretrained`` or ``backbone`` (.pdparams) for a model."""
    if kind == "inference":
        return ensure_inference_model(spec, tag, progress, log, refresh, hint)
    cfg = spec.pretrained_cfg(tag)
    url = cfg.pretrained_url if kind == "pretrained" else cfg.backbone_url
    if url is None:
        raise UsageError(f"{spec.name} has no {kind} weights", hint="backbone weights exist for the CLIP models")
    return fetch(url, cache_dir("models", spec.name) / url.rsplit("/", 1)[-1], progress=progress, log=log,
                 refresh=refresh, refresh_hint=f"imgfeat download model {spec.name} --kind {kind} --refresh")


def list_cached_models(tag: str) -> List[CacheEntry]:
    """Every official file of every model for ``tag``, cached or not."""
    from imgfeat_cli.models.registry import get_spec, list_models

    out: List[CacheEntry] = []
    for name in list_models():
        cfg = get_spec(name).pretrained_cfg(tag)
        for kind, url in (("inference", cfg.inference_url), ("pretrained", cfg.pretrained_url),
                          ("backbone", cfg.backbone_url)):
            if url is None:
                continue
            path = inference_dir(name, tag) if kind == "inference" else cache_root() / "models" / name / url.rsplit("/", 1)[-1]
            out.append(CacheEntry(f"model/{kind}", name, str(path), path.exists(), entry_size(path), url))
    return out
