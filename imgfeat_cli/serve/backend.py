"""The one place the service touches models and indexes.

Everything the server does with a model (load it, turn request bytes into a model input row, run
a batch) and with an index folder (load, build, add, remove, search, describe) goes through these
functions, so the library core can change under them without the server noticing. Today they
call ``pipeline.predictor.create_model``, the model's pre-processing and ``embed_batch``, and
``retrieval.index.Index`` / ``retrieval.builder`` (whose writer lock and atomic folder swap every
write here inherits).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.imaging.decode import Limits, decode_image
from imgfeat_cli.serve.errors import HTTPError


class IndexBusy(HTTPError):
    """Another process (``imgfeat index add`` from a shell) holds the index's writer lock."""

    status, code, retry_after = 409, "index_busy", 1


class OtherModel(HTTPError, UsageError):
    """The index was built with another model than the one this server runs."""

    status, code = 409, "other_model"


# models ------------------------------------------------------------------------------------------
def load_model(source: Any, batch_size: int, log: Callable[[str], None]) -> Any:
    """The model ``source`` (a :class:`~imgfeat_cli.models.source.ModelSource`) names, downloaded
    into the cache on first use, measured for the engine at the server's batch size."""
    from imgfeat_cli.pipeline.predictor import FeatureModel

    return source.replace(batch_size=batch_size).load(FeatureModel, log=log)


def model_identity(model: Any) -> Dict[str, Any]:
    """What an index records about the model that made its vectors (see
    :mod:`imgfeat_cli.retrieval.modelrecord`)."""
    return model.record()


def describe_model(model: Any) -> str:
    return f"{model.name} ({model.backend} {model.precision} on {model.device})"


def prepare(model: Any, data: bytes, name: str, limits: Limits, keep_rgb: bool = False
            ) -> Tuple[np.ndarray, Tuple[int, int], Optional[np.ndarray]]:
    """Decode one image (refusing too many bytes or pixels before any pixel is decoded) and
    pre-process it: ``(model input row, (width, height), the RGB pixels when keep_rgb)``."""
    rgb = decode_image(data, name=name, limits=limits)
    row = model.preprocessor(rgb)
    return np.ascontiguousarray(row, dtype=np.float32), (int(rgb.shape[1]), int(rgb.shape[0])), \
        (rgb if keep_rgb else None)


def embed(model: Any, batch: np.ndarray) -> np.ndarray:
    """L2-normalised features of a batch of model input rows (one forward pass)."""
    return model.embed_batch(batch)


# indexes -----------------------------------------------------------------------------------------
def load_index(folder: Path) -> Any:
    from imgfeat_cli.retrieval.index import Index

    return Index.load(folder)


def restore_backup(folder: Path, bak: Path) -> bool:
    """Rename a whole ``bak`` index to the missing ``folder`` under the writer lock; False when
    another process restored (or wrote) it meanwhile."""
    from imgfeat_cli.common import fsutil
    from imgfeat_cli.retrieval.builder import locked

    lock = locked(folder)
    try:
        if folder.exists():
            return False
        load_index(bak)  # only a whole index is restored
        os.replace(bak, folder)
        fsutil.fsync_dir(folder.parent)
        return True
    finally:
        lock.release()


def check_model(index: Any, identity: Dict[str, Any], allow_other: bool, warn: Callable[[str], None],
                where: str) -> None:
    """Refuse an index whose recorded model is not the server's (its vectors would be compared
    with features of another model: scores near zero, no error); an int8 folder quantized from
    the index's model is the same model; ``allow_other`` only warns (the rules of ``imgfeat search``)."""
    from imgfeat_cli.retrieval import modelrecord

    try:
        modelrecord.check(index.model, identity, "this server's model's vectors", allow_other, warn,
                          what_of=f"the vectors of index {where}")
    except UsageError as exc:
        raise OtherModel(exc.message, hint="serve it with the model it was built with (or without model flags: "
                         "the first --index's own), or pass --allow-other-model") from None


def _writing(folder: Path, write: Callable[[], Any]) -> Any:
    """Run ``write`` (a retrieval builder call, which takes the folder's writer lock)."""
    from imgfeat_cli.retrieval.builder import locked

    try:
        locked(folder).release()  # free now? The builder takes it again at once.
    except UsageError as exc:
        raise IndexBusy(exc.message, hint="another imgfeat process is changing this index; retry shortly") from None
    return write()


def build_index(folder: Path, feats: np.ndarray, labels: Sequence[str], identity: Dict[str, Any]) -> Any:
    """A new Flat/IP index (PaddleX's serving builds those) holding ``feats``, written to ``folder``."""
    from imgfeat_cli.retrieval.builder import locked
    from imgfeat_cli.retrieval.index import Index

    lock = locked(folder)
    try:
        if folder.exists():
            raise UsageError(f"index {folder.name} exists already")
        index = Index.create(int(feats.shape[1]), "Flat", "IP", model=identity)
        index.add(feats, [str(v) for v in labels])
        index.save(folder)
        return index
    finally:
        lock.release()


def add_to_index(folder: Path, feats: np.ndarray, labels: Sequence[str]) -> Tuple[Any, List[int]]:
    """Append vectors (uploads have no input path); return the new index and the ids given."""
    from imgfeat_cli.retrieval.builder import add_to_index as add

    index = _writing(folder, lambda: add(folder, feats, labels=[str(v) for v in labels]))
    added = int(index.report.added)
    return index, (index.ids()[-added:].tolist() if added else [])


def remove_from_index(folder: Path, ids: Sequence[int] = (), label: Optional[str] = None) -> Tuple[Any, int]:
    """Remove ids (and/or every item of ``label``); return the new index and how many went."""
    from imgfeat_cli.retrieval.builder import remove_from_index as remove

    index = _writing(folder, lambda: remove(folder, [int(i) for i in ids], label=label))
    return index, int(index.report.removed)


def search(index: Any, feats: np.ndarray, k: int, threshold: Optional[float]) -> List[Dict[str, Any]]:
    """One ``{"labels", "scores", "ids", "input_paths"}`` per query row, best first."""
    out = []
    for res in index.search(feats, k, threshold):
        out.append({**res, "input_paths": [index.paths.get(i) for i in res["ids"]]})
    return out


def index_info(index: Any) -> Dict[str, Any]:
    return index.info()


def index_count(index: Any) -> int:
    return int(index.count)


def index_paths(index: Any) -> Mapping[int, str]:
    """The input path recorded for each id that has one (galleries built from image lists); a
    read-only mapping, not a copy (a lookup per request must not copy millions of items)."""
    return index.paths


def index_labels(index: Any) -> Mapping[int, str]:
    """Each id's label (read-only, as :func:`index_paths`)."""
    return index.id_map
