"""Index folders on disk: PaddleX's two files, the legacy PaddleClas id map, imgfeat's side file.

Reading checks what PaddleX only asserts (and more): both files present, ``vector.index`` a faiss
id-mapped index, its ids exactly the keys of ``id_map``, and a readable side file (an unreadable or
outdated one costs only the input paths, and is said). Writing goes through a temp folder swapped
in whole (:func:`imgfeat_cli.common.folders.replace_dir`), so the files always change together.

faiss reads and writes through Python file objects (``PyCallbackIOReader/Writer``): faiss' own
``fopen`` mishandles non-ASCII paths on Windows, one of the crashes PaddleX users report.
"""
from __future__ import annotations

import logging
import json
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import yaml

from imgfeat_cli.common import folders
from imgfeat_cli.common.errors import ImgfeatError, IndexFormatError, UsageError
from imgfeat_cli.imaging.decode import is_image_path
from imgfeat_cli.retrieval import faissids
from imgfeat_cli.retrieval.idmap import IdMap, PathMap

VECTOR_FILE = "vector.index"
ID_MAP_FILE = "id_map.yaml"
LEGACY_ID_MAP_FILE = "id_map.pkl"
SIDE_FILE = "imgfeat_index.json"
SIDE_FORMAT = 1
OWN_FILES = frozenset({VECTOR_FILE, ID_MAP_FILE, LEGACY_ID_MAP_FILE, SIDE_FILE})


def faiss_module() -> Any:
    """``import faiss``, or a one-line error saying how to get it. faiss's loader logs which CPU
    build it tried at INFO: kept off stderr (``--quiet`` means quiet; a failed import still says why)."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        import faiss
    except ImportError:
        raise ImgfeatError("faiss is not installed (needed for gallery indexes)",
                           hint="pip install faiss-cpu (or faiss-gpu; the retrieval extra installs faiss-cpu)") from None
    return faiss


def check_folder(folder: Path) -> None:
    """The folder exists and looks like an index; else a one-line error that says what to do."""
    if not folder.exists():
        bak = folder.with_name(folder.name + ".bak")
        hint = (f"{bak} holds the last complete index (a write was interrupted?): rename it to {folder.name}"
                if bak.is_dir() else "build one with `imgfeat index build --gallery G --out DIR`")
        raise UsageError(f"index folder {folder} does not exist", hint=hint)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder (an index is a folder with {VECTOR_FILE} and {ID_MAP_FILE})")
    if not (folder / VECTOR_FILE).is_file():
        raise IndexFormatError(f"{folder} has no {VECTOR_FILE}: not a gallery index, or an incomplete copy",
                               hint="rebuild it with `imgfeat index build`")
    if not (folder / ID_MAP_FILE).is_file() and not (folder / LEGACY_ID_MAP_FILE).is_file():
        raise IndexFormatError(f"{folder} has no {ID_MAP_FILE} (nor a legacy {LEGACY_ID_MAP_FILE})",
                               hint="an index needs both files; rebuild it with `imgfeat index build`")


class _NumpyScalarsOnly(pickle.Unpickler):
    """Unpickles ``{np.int64: str}`` and nothing that could run code."""

    ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in an id map")
        if module == "numpy.core.multiarray":
            try:
                import numpy._core.multiarray  # noqa: F401  numpy >= 2: the old path only warns
                module = "numpy._core.multiarray"
            except ImportError:
                pass
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return super().find_class(module, name)


def split_legacy_doc(doc: Any) -> Tuple[Optional[str], str]:
    """PaddleClas stored the whole gallery line (``path<TAB>label``), older PaddleX the label alone."""
    text = str(doc).strip()
    head, _, tail = text.partition("\t" if "\t" in text else " ")
    if tail.strip() and is_image_path(head):
        return head, tail.strip()
    return None, text


def _read_id_map(folder: Path) -> Tuple[IdMap, Dict[str, Any], PathMap]:
    """(id map, the yaml's other keys, paths recovered from legacy docs)."""
    yml = folder / ID_MAP_FILE
    if yml.is_file():
        try:
            # libyaml when present: a million-item map loads in seconds, not minutes
            doc = yaml.load(yml.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise IndexFormatError(f"{yml} is not valid YAML ({exc.__class__.__name__})",
                                   hint="restore it from the .bak folder or rebuild the index") from None
        if not isinstance(doc, dict) or not {"id_map", "index_type", "metric_type"} <= set(doc):
            raise IndexFormatError(f"{yml} lacks id_map, index_type or metric_type (PaddleX needs all three)")
        raw = doc.pop("id_map") or {}  # the parsed dict goes as soon as the compact map holds it
        if not isinstance(raw, dict):
            raise IndexFormatError(f"{yml}: id_map is not a mapping of ids to labels")
        if not all(isinstance(v, (str, int, float)) for v in raw.values()):  # e.g. an alias bomb
            raise IndexFormatError(f"{yml}: id_map has a label that is not a plain text or number")
        try:
            return IdMap.from_arrays([int(k) for k in raw], [str(v) for v in raw.values()]), doc, PathMap()
        except (TypeError, ValueError):
            raise IndexFormatError(f"{yml}: id_map has a key that is not a 64-bit integer id") from None
    pkl = folder / LEGACY_ID_MAP_FILE
    try:
        with open(pkl, "rb") as fh:
            raw = _NumpyScalarsOnly(fh).load()
        if not isinstance(raw, dict):
            raise pickle.UnpicklingError("not a dict")
        docs = [(int(k),) + split_legacy_doc(v) for k, v in raw.items()]
        id_map = IdMap.from_arrays([k for k, _, _ in docs], [label for _, _, label in docs])
        paths = PathMap.from_arrays([k for k, p, _ in docs if p], [p for _, p, _ in docs if p])
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, ImportError) as exc:
        raise IndexFormatError(f"{pkl} is not a PaddleClas id map ({exc})",
                               hint="only a pickled {id: text} dict is read; rebuild the index") from None
    return id_map, {}, paths


def _read_vectors(path: Path) -> Any:
    faiss = faiss_module()
    try:
        with open(path, "rb") as fh:
            index = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
    except (RuntimeError, MemoryError, ValueError) as exc:
        text = str(exc).strip()
        found = re.search(r" at \S+:\d+: (.+)", text)
        first = (found.group(1) if found else text.splitlines()[-1] if text else exc.__class__.__name__)[:160]
        raise IndexFormatError(f"{path} is not a readable faiss index ({first})",
                               hint="restore the folder's .bak copy or rebuild the index") from None
    if not hasattr(index, "id_map"):
        index = faiss.downcast_index(index)
    if not hasattr(index, "id_map"):
        raise IndexFormatError(f"{path} holds a {type(index).__name__} without ids (an IndexIDMap or IndexIDMap2 is expected)",
                               hint="rebuild the index with `imgfeat index build`")
    return index


def _describe(index: Any) -> Tuple[str, str, str]:
    """(index_type, metric_type, factory) of a faiss id-mapped index: the family as PaddleX names it
    (``IVF`` for every inverted-file index, ``HNSW32`` for graphs) and the factory string."""
    faiss = faiss_module()
    inner = faiss.downcast_index(index.index)
    metric = "IP" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "L2"
    try:
        ivf = faiss.extract_index_ivf(inner)
    except RuntimeError:
        ivf = None
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        codes = "Flat"
        if isinstance(ivf, faiss.IndexIVFScalarQuantizer):
            codes = {faiss.ScalarQuantizer.QT_8bit: "SQ8", faiss.ScalarQuantizer.QT_4bit: "SQ4",
                     faiss.ScalarQuantizer.QT_fp16: "SQfp16"}.get(ivf.sq.qtype, "SQ")
        elif isinstance(ivf, faiss.IndexIVFPQ):
            codes = f"PQ{ivf.pq.M}" + (f"x{ivf.pq.nbits}" if ivf.pq.nbits != 8 else "")
        elif isinstance(ivf, faiss.IndexIVFPQFastScan):
            codes = f"PQ{ivf.pq.M}x4fs"
        elif isinstance(ivf, getattr(faiss, "IndexIVFRaBitQFastScan", ())):
            codes = f"RaBitQfs{ivf.rabitq.nb_bits}"
        elif isinstance(ivf, getattr(faiss, "IndexIVFRaBitQ", ())):
            codes = f"RaBitQ{ivf.rabitq.nb_bits}"
        prefix = "" if ivf is inner else "(transformed),"
        return "IVF", metric, f"{prefix}IVF{ivf.nlist},{codes}"
    if isinstance(inner, faiss.IndexHNSW):
        return "HNSW32", metric, "HNSW32"
    return "Flat", metric, "Flat"


def _apply_side_file(idx: Any, folder: Path) -> None:
    path = folder / SIDE_FILE
    if not path.is_file():
        return
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        items = doc["items"]
        model, next_id = doc.get("model"), int(doc.get("next_id") or 0)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        idx.notes.append(f"{path} is unreadable ({exc.__class__.__name__}): input paths are unknown; "
                         "it is rewritten on the next change")
        return
    stale, listed, path_ids, paths = 0, [], [], []  # listed: the ids held that the side file lists
    for item in items if isinstance(items, list) else []:
        try:
            i, p, label = int(item[0]), item[1], str(item[2])
        except (TypeError, ValueError, IndexError):
            stale += 1
            continue
        held = idx.id_map.get(i)
        if held is not None:
            listed.append(i)
        if held == label:
            if isinstance(p, str):
                path_ids.append(i)
                paths.append(p)
        else:
            stale += 1
    idx.paths.add(path_ids, paths)  # ids the id map holds: 64-bit
    del items, doc["items"], paths
    idx.model = model if isinstance(model, dict) else None
    notes = doc.get("model_notes")
    idx.model_notes = [str(n) for n in notes] if isinstance(notes, list) else []
    build = doc.get("build")
    idx.build = build if isinstance(build, dict) else None
    if isinstance(doc.get("factory"), str) and idx.factory.startswith("(transformed),"):
        idx.factory = doc["factory"]  # what faiss cannot tell back (a pre-transform's parameters)
    idx.next_id = max(idx.next_id, next_id)
    missing = len(idx.id_map) - len(np.unique(np.asarray(listed, np.int64)))  # ids the side file does not list
    if stale or missing:
        idx.notes.append(f"{path}: {stale + missing} entries were changed by another tool since imgfeat wrote it; "
                         "their input paths are unknown")


def read_model_record(folder: Path) -> Optional[Dict[str, Any]]:
    """The model record of an index folder's side file, read alone (cheap: no vectors), so a job
    can choose its model before it takes the writer lock; ``None`` when there is none."""
    check_folder(folder)
    try:
        doc = json.loads((folder / SIDE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    model = doc.get("model") if isinstance(doc, dict) else None
    return model if isinstance(model, dict) else None


def read_folder(cls: Any, folder: Path) -> Any:
    """Load ``folder`` into ``cls`` (:class:`imgfeat_cli.retrieval.index.Index`)."""
    check_folder(folder)
    id_map, doc, legacy_paths = _read_id_map(folder)
    if doc.get("metric_type") == "hamming":
        raise UsageError(f"{folder} is a binary (hamming) index, which imgfeat does not support",
                         hint="imgfeat indexes float features with metric IP or L2")
    faiss = faiss_module()
    index = _read_vectors(folder / VECTOR_FILE)
    if index.ntotal != len(id_map):
        raise IndexFormatError(f"{folder}: {VECTOR_FILE} holds {index.ntotal} vectors but the id map "
                               f"{len(id_map)} labels", hint="the files do not belong together: restore the "
                               ".bak copy or rebuild the index")
    ids = np.sort(faiss.vector_to_array(index.id_map))
    if not np.array_equal(ids, id_map.ids):
        raise IndexFormatError(f"{folder}: the ids in {VECTOR_FILE} differ from those in the id map",
                               hint="restore the .bak copy or rebuild the index")
    damage = faissids.check_numbering(index)
    if damage:
        raise IndexFormatError(f"{folder}: {VECTOR_FILE} is damaged: {damage}",
                               hint="restore the .bak copy or rebuild the index (imgfeat's `index remove` renumbers)")
    index_type, metric, factory = _describe(index)
    idx = cls(index, id_map, metric, index_type, paths=legacy_paths, factory=factory,
              next_id=int(ids.max()) + 1 if len(ids) else 0)
    declared = (doc.get("index_type"), doc.get("metric_type"))
    if doc and declared != (index_type, metric):
        idx.notes.append(f"{ID_MAP_FILE} says {declared[0]}/{declared[1]} but {VECTOR_FILE} is "
                         f"{index_type}/{metric}; using the latter (rewritten on the next change)")
    if not doc:
        idx.notes.append(f"legacy PaddleClas layout ({LEGACY_ID_MAP_FILE}); the next change writes {ID_MAP_FILE}")
    _apply_side_file(idx, folder)
    return idx


def _carry_over(old: Path, new: Path) -> None:
    """Keep what else the user put in the index folder."""
    if not old.is_dir():
        return
    for child in old.iterdir():
        if child.name in OWN_FILES:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.copytree(child, new / child.name, symlinks=True)
        else:
            shutil.copy2(child, new / child.name, follow_symlinks=False)


#: Labels YAML writes as they are (no quoting, no folding): letters, digits and ``_./@+-``, not first.
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./@+-]*")


def _yaml_entry(key: int, label: str, resolver: Any) -> str:
    """One ``  id: label`` line of ``id_map.yaml``, exactly as ``yaml.safe_dump`` of the whole map
    writes it (block style: each entry is written on its own, so entry by entry is the same text)."""
    if _PLAIN.fullmatch(label) and resolver.resolve(yaml.ScalarNode, label, (True, False)) == "tag:yaml.org,2002:str":
        return f"  {key}: {label}\n"
    return yaml.safe_dump({"id_map": {key: label}}, default_flow_style=False, allow_unicode=True)[len("id_map:\n"):]


def id_map_yaml(index: Any) -> Iterator[str]:
    """``id_map.yaml`` exactly as PaddleX's ``IndexData.save`` writes it (``yaml.dump`` sorts keys),
    in pieces: an index of millions of items is written without building the document in memory."""
    tail = yaml.safe_dump({"index_type": index.index_type, "metric_type": index.metric_type},
                          default_flow_style=False, allow_unicode=True)
    if not index.id_map:
        yield "id_map: {}\n" + tail
        return
    yield "id_map:\n"
    resolver = yaml.resolver.Resolver()
    for ids, labels in index.id_map.batches():  # in id order, as yaml.dump sorts keys
        yield "".join(_yaml_entry(k, label, resolver) for k, label in zip(ids, labels))
    yield tail


def side_json(index: Any) -> Iterator[str]:
    """The side file, its ``items`` written in pieces (see :func:`id_map_yaml`)."""
    doc = index.side_doc(items=False)
    head = json.dumps(doc, ensure_ascii=False)
    yield head[:-1] + ', "items": ['  # head is a non-empty object
    for n, (ids, labels) in enumerate(index.id_map.batches()):
        part = [list(item) for item in zip(ids, index.paths.lookup(ids), labels)]
        yield ("," if n else "") + json.dumps(part, ensure_ascii=False)[1:-1]
    yield "]}\n"


def write_folder(idx: Any, folder: Path) -> Path:
    """Write ``idx`` to ``folder`` atomically; the previous folder is kept as ``<folder>.bak``."""

    faiss = faiss_module()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder")
    try:
        with folders.replace_dir(folder) as tmp:
            with open(tmp / VECTOR_FILE, "wb") as fh:
                faiss.write_index(idx.faiss_index, faiss.PyCallbackIOWriter(fh.write))
            with open(tmp / ID_MAP_FILE, "w", encoding="utf-8") as fh:
                fh.writelines(id_map_yaml(idx))
            with open(tmp / SIDE_FILE, "w", encoding="utf-8") as fh:
                fh.writelines(side_json(idx))
            _carry_over(folder, tmp)
    except OSError as exc:
        raise ImgfeatError(f"cannot write the index {folder}: {exc.strerror or exc}",
                           hint="check free space and permissions; the previous index is unchanged") from None
    return folder
