"""Official model files: where each lives in the download cache, and fetching it on first use."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List

from imgfeat_cli.common.cache import (CacheEntry, Log, cache_dir, cache_root, entry_size, fetch, fetch_and_extract,
                                      offline)
from imgfeat_cli.common.errors import DownloadError, ModelError, Unreachable, UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress

KINDS = ("inference", "pretrained", "backbone")


def inference_dir(name: str, tag: str) -> Path:
    return cache_root() / "models" / name / tag / "inference"


#: The ways to a model with no internet, by what is missing: every failure to fetch an official
#: model names them (:func:`offline_hint`), and docs/offline.md explains them.
OFFLINE_ROUTES = {
    "inference": "no internet? use a local inference folder, --model-dir DIR (embed, eval, index, search): "
                 "examples/output/inference, which `bash examples/quickstart.sh` trains offline in a source checkout; "
                 "one `imgfeat export --weights CKPT.pdparams --out DIR` makes from a checkpoint; or one copied from a "
                 "machine with internet, where `imgfeat download model {name}` prints its path",
    "weights": "no internet? train from random initialisation with -o Train.pretrain_weight_path=none, or from a "
               "checkpoint with -o Train.pretrain_weight_path=FILE.pdparams, e.g. one copied from a machine with "
               "internet, where `imgfeat download model {name} --kind {kind}` prints its path",
}
MIRROR_ROUTE = "or point IMGFEAT_BASE_URL at a mirror of the official files"


def offline_hint(name: str, kind: str = "inference") -> str:
    """What to do when model ``name``'s official ``kind`` files cannot be fetched: the offline routes."""
    routes = OFFLINE_ROUTES["inference" if kind == "inference" else "weights"]
    return f"{routes.format(name=name, kind=kind)}; {MIRROR_ROUTE}"


def _fetch_model(spec: Any, kind: str, tag: str, get: Callable[[], Path]) -> Path:
    """``get()``, with a failure to reach the network turned into one error naming the offline routes."""
    try:
        return get()
    except Unreachable as exc:
        raise ModelError(f"cannot get model {spec.name} ({kind}, {tag}): {exc.message}",
                         hint=offline_hint(spec.name, kind)) from None
    except DownloadError as exc:  # a checksum or archive problem: its own hint says what to do
        raise ModelError(f"cannot get model {spec.name} ({kind}, {tag}): {exc.message}", hint=exc.hint) from None


def ensure_inference_model(spec: Any, tag: str, progress: ProgressFn = null_progress, log: Log = None,
                           refresh: bool = False) -> Path:
    """The unpacked official inference folder for ``spec``/``tag``, downloading it if needed."""
    target = inference_dir(spec.name, tag)

    def ready(path: Path) -> bool:
        return (path / "inference.pdiparams").is_file()

    if not refresh and ready(target):
        return target
    if offline():
        raise ModelError(f"model {spec.name} ({tag}) is not in the cache {cache_root()} and IMGFEAT_OFFLINE is set",
                         hint=f"{offline_hint(spec.name)}; or unset IMGFEAT_OFFLINE to download it")
    url = spec.pretrained_cfg(tag).inference_url
    return _fetch_model(spec, "inference", tag, lambda: fetch_and_extract(
        url, cache_dir("models", spec.name, tag) / f"{spec.name}_infer.tar", target, ready, progress, log, refresh,
        refresh_hint=f"imgfeat download model {spec.name} --refresh"))


def ensure_model_file(spec: Any, kind: str, tag: str, progress: ProgressFn = null_progress, log: Log = None,
                      refresh: bool = False) -> Path:
    """Fetch ``inference`` (folder), ``pretrained`` or ``backbone`` (.pdparams) for a model."""
    if kind == "inference":
        return ensure_inference_model(spec, tag, progress, log, refresh)
    cfg = spec.pretrained_cfg(tag)
    url = cfg.pretrained_url if kind == "pretrained" else cfg.backbone_url
    if url is None:
        raise UsageError(f"{spec.name} has no {kind} weights", hint="backbone weights exist for the CLIP models")
    return _fetch_model(spec, kind, tag, lambda: fetch(
        url, cache_dir("models", spec.name) / url.rsplit("/", 1)[-1], progress=progress, log=log, refresh=refresh,
        refresh_hint=f"imgfeat download model {spec.name} --kind {kind} --refresh"))


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
