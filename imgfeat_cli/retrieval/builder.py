"""``index build|add|remove``: galleries into index folders, one locked writer at a time.

Each operation takes the folder's writer lock, reads and validates everything it can before it
embeds or changes anything, works on the index in memory, and writes the folder back atomically
(:meth:`Index.save`: the previous state stays as ``<folder>.bak``). Vectors stream in chunks
(:data:`gallery.CHUNK`): building or growing an index costs memory for one chunk beyond the index
(and, for IVF, the training sample). ``add`` embeds only images the index does not hold yet.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from imgfeat_cli.common import folders
from imgfeat_cli.common.errors import ImgfeatError, UsageError
from imgfeat_cli.common.progress import ProgressFn, null_progress
from imgfeat_cli.retrieval import autoindex, layout, modelrecord, streambuild, streaming
from imgfeat_cli.retrieval.gallery import Chunk, Gallery, read_gallery, vector_chunks
from imgfeat_cli.retrieval.index import Index

@dataclass
class Report:
    """What one operation did, for the CLI and for scripts (``index.report``)."""

    folder: Optional[str]
    action: str
    added: int = 0
    removed: int = 0
    skipped_known: int = 0
    skipped_repeated: int = 0
    errors: List[Tuple[str, str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    written: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return {"folder": self.folder, "action": self.action, "added": self.added, "removed": self.removed,
                "skipped_already_indexed": self.skipped_known, "skipped_repeated": self.skipped_repeated,
                "failed": len(self.errors), "errors": [{"input_path": p, "error": e} for p, e in self.errors],
                "notes": self.notes, "written": self.written}


def locked(folder: Path) -> Any:
    """The writer lock of ``folder``, failing at once (with what to do) when another process holds it."""
    return folders.take_writer_lock(folder, "the index")


def _train_rows(index: Index) -> int:
    nlist = getattr(layout.faiss_module().downcast_index(index.faiss_index.index), "nlist", 0)
    return int(nlist) * streambuild.TRAIN_PER_LIST


def fill(index: Optional[Index], chunks: Iterable[Chunk], make: Callable[[int], Index]) -> Optional[Index]:
    """Add every chunk to ``index`` (made by ``make(dim)`` on the first chunk when ``None``); an
    untrained IVF index is trained on the first chunks (up to its sample size) before they go in."""
    pending: List[Chunk] = []
    for feats, labels, paths in chunks:
        if index is None:
            index = make(int(np.asarray(feats).shape[1]))
        if index.needs_training:
            pending.append((feats, labels, paths))
            if sum(len(c[1]) for c in pending) >= _train_rows(index):
                _train_and_add(index, pending)
                pending = []
            continue
        index.add(feats, labels, paths)
    if pending and index is not None:
        _train_and_add(index, pending)
    return index


def _train_and_add(index: Index, pending: List[Chunk]) -> None:
    index.train(np.concatenate([np.asarray(c[0], dtype=np.float32) for c in pending]))
    for feats, labels, paths in pending:
        index.add(feats, labels, paths)


def _as_gallery(gallery: Any, labels: Optional[Sequence[Any]], paths: Optional[Sequence[Optional[str]]],
                root: Optional[str], labels_file: Optional[str]) -> Gallery:
    if isinstance(gallery, np.ndarray):
        if labels is None or len(labels) != len(gallery):
            raise UsageError("an array gallery needs one label per row (labels=...)")
        if not len(gallery):
            raise UsageError("the gallery is empty")
        return Gallery("array", [str(v) for v in labels], list(paths) if paths is not None else [None] * len(labels),
                       features=np.asarray(gallery, dtype=np.float32))
    return read_gallery(str(gallery), root, labels_file)


def _record(model: Any, gallery: Gallery, dim: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """The record of the model that made the gallery's vectors (see :mod:`.modelrecord`; a lazy
    model is loaded only when the gallery has images to embed)."""
    if gallery.features is None and model is not None:
        return model.record(dim)
    return dict(gallery.model, dim=gallery.dim) if gallery.model else None


def _check_same_model(index: Index, record: Optional[Dict[str, Any]], allow_other: bool, report: "Report") -> None:
    """Refuse vectors of another model than the index's; allowed, the warning is kept in the
    index (``model_notes``) and in the report."""
    warning = modelrecord.check(index.model, record, "the new gallery vectors", allow_other)
    if warning:
        index.model_notes.append(warning)
        report.notes.append(warning)


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder",
                         hint="an index is a folder: give a new or empty folder's path")
    if out.is_dir() and any(out.iterdir()):
        if not (out / layout.VECTOR_FILE).exists():
            raise UsageError(f"--out {out} is a folder that is not an index; refusing to replace it",
                             hint="choose a new or empty folder")
        if not overwrite:
            raise UsageError(f"index {out} exists", hint="use `imgfeat index add` to grow it, or --overwrite "
                             "to rebuild it (the old one is kept as .bak)")
        folders.check_backup_free(out)


def _finish(index: Optional[Index], gallery: Gallery, report: Report) -> Index:
    report.skipped_known, report.skipped_repeated = gallery.skipped_known, gallery.skipped_repeated
    report.errors = list(gallery.errors)
    if index is None:
        first = f" (first: {gallery.errors[0][0]}: {gallery.errors[0][1]})" if gallery.errors else ""
        raise ImgfeatError(f"no gallery image could be embedded: {len(gallery.errors)} failed{first}",
                           hint="check the paths in the gallery list and --root")
    report.notes = list(index.notes) + [n for n in report.notes if n not in index.notes]
    index.report = report
    return index


def build_index(gallery: Any, out: Optional[Any] = None, *, labels: Optional[Sequence[Any]] = None,
                paths: Optional[Sequence[Optional[str]]] = None, root: Optional[str] = None,
                labels_file: Optional[str] = None, model: Any = None, index_type: str = "Flat",
                metric_type: str = "IP", nlist: Optional[int] = None, nprobe: Optional[int] = None,
                ef_search: Optional[int] = None, batch_size: Optional[int] = None, overwrite: bool = False,
                max_memory: Any = None, target_recall: float = 0.95, label_from: str = "column",
                progress: ProgressFn = null_progress) -> Index:
    """Build an index from a gallery (label file, dataset folder, embeddings file or Parquet folder,
    local or ``s3://``, or an array with ``labels``); with ``out`` write it there. Embeddings are
    streamed (:mod:`.streambuild`); ``index_type="auto"`` picks the index for ``max_memory`` ("8GB").
    ``index.report`` says what was added and skipped; ``index.build`` the measured recall."""
    layout.faiss_module()  # a missing faiss is said before a model is loaded and a gallery embedded
    folder = Path(out) if out is not None else None
    if max_memory is not None and index_type != "auto":
        raise UsageError("--max-memory goes with --index-type auto", hint="drop --max-memory, or pass --index-type auto")
    max_memory = None if max_memory is None else autoindex.parse_size(max_memory)
    lock = locked(folder) if folder is not None else None
    try:
        if folder is not None:
            _check_output(folder, overwrite)
        if isinstance(gallery, np.ndarray) or not streaming.is_streamable(gallery):
            gal = _as_gallery(gallery, labels, paths, root, labels_file).without(())
            index = _build_in_memory(gal, model, index_type, metric_type, nlist, nprobe, ef_search, batch_size,
                                     max_memory, target_recall, progress)
        else:
            gal = Gallery(str(gallery), [], [])
            source = streaming.open_source(str(gallery), labels_file, label_from)
            index = streambuild.build_streamed(source, index_type, metric_type, max_memory, target_recall, nlist,
                                               nprobe, ef_search, streaming.recorded(str(gallery), source), progress)
        index = _finish(index, gal, Report(str(folder) if folder else None, "build", added=len(index or [])))
        index.report.notes += modelrecord.notes_for(index.model)
        if folder is not None:
            index.save(folder)
            index.report.written = True
        return index
    finally:
        if lock is not None:
            lock.release()


def _build_in_memory(gal: Gallery, model: Any, index_type: str, metric_type: str, nlist: Optional[int],
                     nprobe: Optional[int], ef_search: Optional[int], batch_size: Optional[int],
                     max_memory: Optional[int], target_recall: float, progress: ProgressFn) -> Optional[Index]:
    """Images (embedded a chunk at a time) or an array. ``auto`` gathers the vectors first: its
    choice, training sample and recall need the whole gallery (an image gallery's vectors are small
    next to the time embedding them takes). The index records the model (see :mod:`.modelrecord`)."""
    chunks = vector_chunks(gal, model, batch_size, progress)
    if index_type != "auto":
        def make(dim: int) -> Index:
            return Index.create(dim, index_type, metric_type, len(gal), nlist, nprobe, ef_search,
                                _record(model, gal, dim))

        return fill(None, chunks, make)
    got = list(chunks)
    if not got:
        return None
    feats = np.concatenate([np.asarray(c[0], dtype=np.float32) for c in got])
    source = streaming.ArraySource(gal.origin, feats, [p for c in got for p in c[2]], [lab for c in got for lab in c[1]])
    return streambuild.build_streamed(source, "auto", metric_type, max_memory, target_recall, nlist, nprobe,
                                      ef_search, _record(model, gal, feats.shape[1]), progress)


def add_to_index(folder: Any, gallery: Any, *, labels: Optional[Sequence[Any]] = None,
                 paths: Optional[Sequence[Optional[str]]] = None, root: Optional[str] = None,
                 labels_file: Optional[str] = None, model: Any = None, batch_size: Optional[int] = None,
                 progress: ProgressFn = null_progress, allow_other_model: bool = False) -> Index:
    """Embed and add only the gallery items the index does not hold yet (by input path), with
    the index's model: vectors of another model are refused (see :mod:`.modelrecord`) unless
    ``allow_other_model``."""
    folder = Path(folder)
    lock = locked(folder)
    try:
        index = Index.load(folder)
        folders.check_backup_free(folder)  # the add keeps the previous index as .bak
        gal = _as_gallery(gallery, labels, paths, root, labels_file).without(set(index.paths.values()))
        if gal.dim is not None and gal.dim != index.dim:
            raise UsageError(f"gallery features have dimension {gal.dim}, the index holds {index.dim}-d vectors",
                             hint="use the model (and embeddings) the index was built with")
        before = index.count
        report = Report(str(folder), "add", notes=modelrecord.notes_for(index.model))
        if len(gal):
            record = _record(model, gal, index.dim)
            _check_same_model(index, record, allow_other_model, report)
            index.model = index.model or record
            fill(index, vector_chunks(gal, model, batch_size, progress), lambda dim: index)
        report.added = index.count - before
        _finish(index, gal, report)
        if report.added:
            index.save(folder)
            report.written = True
        elif gal.errors:
            raise ImgfeatError(f"nothing was added: {len(gal.errors)} new gallery images failed "
                               f"(first: {gal.errors[0][0]}: {gal.errors[0][1]})", hint="the index is unchanged")
        return index
    finally:
        lock.release()


def read_ids_file(path: str) -> List[int]:
    """Ids from a file whose lines start with an id (PaddleX: the first space-separated column)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"ids file {path} does not exist")
    ids = []
    for no, line in enumerate(p.read_text(encoding="utf-8-sig", errors="replace").split("\n"), start=1):
        head = line.strip().split(None, 1)[0] if line.strip() else ""
        if not head:
            continue
        try:
            ids.append(int(head))
        except ValueError:
            raise UsageError(f"{path}:{no}: {head[:40]!r} is not an integer id") from None
    return ids


def remove_from_index(folder: Any, ids: Iterable[int] = (), *, ids_file: Optional[str] = None,
                      label: Optional[str] = None, path: Optional[str] = None) -> Index:
    """Remove items by id, ids file, label or input path (Flat and IVF; HNSW is refused)."""
    import os

    folder = Path(folder)
    wanted = list(ids) + (read_ids_file(ids_file) if ids_file else [])
    if not wanted and label is None and path is None:
        raise UsageError("nothing to remove", hint="pass --ids 3,7, --ids-file F, --label L or --path P")
    lock = locked(folder)
    try:
        index = Index.load(folder)
        folders.check_backup_free(folder)
        index.check_removable()
        if path is not None and path not in index.paths.values():
            path = os.path.abspath(path)
        selected = index.resolve_ids(wanted, label, path)
        report = Report(str(folder), "remove", removed=index.remove(selected), notes=list(index.notes))
        index.save(folder)
        report.written = True
        index.report = report
        return index
    finally:
        lock.release()
