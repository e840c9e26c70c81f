"""One batch: decode and pre-process each input into a row, then embed the rows that worked.

This is the unit every driver shares: the in-process decode threads, the worker processes, the
Ray actors (:func:`embed_rows`) and ``predict``. A failing input costs its own row, never the
batch; a row whose feature comes out non-finite (a broken model) is a failure too, so NaN is
never written.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common.errors import ImgfeatError
from imgfeat_cli.imaging.decode import DEFAULT_LIMITS, Limits
from imgfeat_cli.pipeline.inputs import InputItem, load_rgb


@dataclass
class BatchResult:
    """One embedded batch: the rows that succeeded, their features (one per row, in order), and
    ``(row, reason)`` failures. ``batch_id`` orders batches that come back out of order."""

    rows: List[int]
    feats: np.ndarray
    errors: List[Tuple[int, str]] = field(default_factory=list)
    batch_id: int = 0


def preprocess(model: Any, item: InputItem, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode ``item`` and pre-process it for ``model`` (a CHW float32 array)."""
    return model.preprocessor(load_rgb(item, limits))


def preprocess_into(model: Any, item: InputItem, out: np.ndarray, limits: Limits = DEFAULT_LIMITS) -> None:
    """Decode and pre-process ``item`` into ``out`` (a row of a preallocated batch)."""
    model.preprocessor.into(load_rgb(item, limits), out)


def row_jobs(model: Any, items: Sequence[InputItem],
             limits: Limits = DEFAULT_LIMITS) -> Tuple[Optional[np.ndarray], List[Callable[[], Any]]]:
    """One decode job per item. With a fixed input shape each job writes its row of a fresh batch
    buffer (returned first); otherwise each returns its array and the buffer is ``None``."""
    shape = model.input_shape
    if shape is None:
        return None, [partial(preprocess, model, it, limits) for it in items]
    buf = np.empty((len(items),) + tuple(shape), np.float32)
    return buf, [partial(preprocess_into, model, it, row, limits) for it, row in zip(items, buf)]


def assemble(model: Any, buf: Optional[np.ndarray], outcomes: Sequence[Callable[[], Any]], batch_id: int = 0,
             after_each: Optional[Callable[[], None]] = None) -> BatchResult:
    """Collect each row's decode (``outcomes``: a job, or a future's ``result``), record the
    failures, then embed the rows that worked in one forward pass. ``after_each`` runs after every
    row (the caller's interruption check)."""
    rows: List[int] = []
    errors: List[Tuple[int, str]] = []
    arrays: List[np.ndarray] = []
    for row, outcome in enumerate(outcomes):
        try:
            arr = outcome()
        except ImgfeatError as exc:
            errors.append((row, exc.message))
        except (MemoryError, RecursionError) as exc:  # one hostile file, not the whole run
            errors.append((row, f"{exc.__class__.__name__} while decoding"))
        except Exception as exc:  # an unexpected decoder failure is still one bad file
            errors.append((row, f"cannot decode ({exc.__class__.__name__}: {exc})"))
        else:
            rows.append(row)
            if buf is None:
                arrays.append(arr)
        if after_each is not None:
            after_each()
    if not rows:
        return BatchResult([], np.empty((0, 0), np.float32), errors, batch_id)
    batch = np.stack(arrays) if buf is None else (buf if len(rows) == len(outcomes) else buf[rows])
    feats = model.embed_batch(batch)
    finite = np.isfinite(feats).all(axis=1)
    if not finite.all():
        errors += [(r, "the model produced a non-finite feature (NaN/inf): are its weights broken?")
                   for r, ok in zip(rows, finite) if not ok]
        rows = [r for r, ok in zip(rows, finite) if ok]
        feats = feats[finite]
    errors.sort()
    return BatchResult(rows, np.ascontiguousarray(feats, dtype=np.float32), errors, batch_id)


def embed_rows(model: Any, items: Sequence[InputItem], limits: Limits = DEFAULT_LIMITS,
               batch_id: int = 0) -> BatchResult:
    """Decode, pre-process and embed one batch in this thread: per-row errors, no threads."""
    buf, jobs = row_jobs(model, items, limits)
    return assemble(model, buf, jobs, batch_id)
