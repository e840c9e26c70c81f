"""Model files checked in Python before any native code reads them.

paddle, paddle2onnx and onnxruntime trust their input: a truncated ``inference.json`` or a flipped
bit in a tensor header of ``inference.pdiparams`` ends the whole process (SIGABRT, exit 134; or
exit 255) with no word about which file is wrong. What is checked here is the structure, never the
values (a flipped bit inside the weights is just another model):

* ``inference.pdiparams``: the tensor stream, header by header (versions, LoD levels, each tensor
  description: data type and dims), each tensor's bytes inside the file, and nothing after the last;
  read by seeking, so a 1 GB file costs a few hundred small reads.
* ``inference.json``: JSON text (a truncated file is not); for the PIR programs paddle 3 writes,
  the parameters it declares match those stored in ``inference.pdiparams`` (count and shapes).
* ``inference.pdmodel`` and ``inference.onnx``: not empty.

Results are remembered per file state (path, size, mtime) within a process.
"""
from __future__ import annotations

import functools
import json
import os
import struct
from pathlib import Path
from typing import BinaryIO, List, Optional, Tuple

from imgfeat_cli.common.errors import ModelError

#: Bytes per element of paddle's ``VarType`` data types (framework.proto).
DTYPE_BYTES = {0: 1, 1: 2, 2: 4, 3: 8, 4: 2, 5: 4, 6: 8, 19: 8, 20: 1, 21: 1, 22: 2, 23: 8, 24: 16}
#: Bounds no real tensor header exceeds; past them the header is damaged.
MAX_LOD_LEVEL, MAX_DESC_BYTES, MAX_DIMS = 16, 1 << 16, 16
HINT = "the file is damaged or incomplete: re-export the model (imgfeat export) or download it again"

Shape = Tuple[int, ...]


class Damaged(Exception):
    """What is wrong, and at which byte offset."""


def _read(fh: BinaryIO, n: int, what: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise Damaged(f"it ends inside {what} (at byte {fh.tell()})")
    return data


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf) or shift > 63:
            raise Damaged("a tensor description is not valid")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _tensor_desc(buf: bytes) -> Tuple[int, Shape]:
    """``VarType.TensorDesc``: field 1 the data type, field 2 the dims (packed or not)."""
    dtype, dims, i = None, [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            if field == 1:
                dtype = value
            elif field == 2:
                dims.append(value)
        elif wire == 2:
            length, i = _varint(buf, i)
            end = i + length
            if end > len(buf):
                raise Damaged("a tensor description is cut short")
            while field == 2 and i < end:
                value, i = _varint(buf, i)
                dims.append(value)
            i = end
        else:
            raise Damaged("a tensor description is not valid")
    if dtype not in DTYPE_BYTES or len(dims) > MAX_DIMS or any(d >= 1 << 40 for d in dims):
        raise Damaged(f"a tensor description is not valid (type {dtype}, dims {dims[:MAX_DIMS]})")
    return dtype, tuple(dims)


def _tensor_shapes(fh: BinaryIO, size: int) -> List[Shape]:
    """The shapes of every tensor in a ``.pdiparams`` stream, checking each header and extent."""
    shapes: List[Shape] = []
    while fh.tell() < size:
        start = fh.tell()
        version, lod_level = struct.unpack("<IQ", _read(fh, 12, "a tensor header"))
        if version != 0 or lod_level > MAX_LOD_LEVEL:
            raise Damaged(f"the tensor header at byte {start} is not valid")
        for _ in range(lod_level):
            (length,) = struct.unpack("<Q", _read(fh, 8, "a tensor header"))
            if fh.tell() + length > size:
                raise Damaged(f"the tensor at byte {start} runs past the end of the file")
            fh.seek(length, os.SEEK_CUR)
        tensor_version, desc_len = struct.unpack("<Ii", _read(fh, 8, "a tensor header"))
        if tensor_version != 0 or not 0 < desc_len <= MAX_DESC_BYTES:
            raise Damaged(f"the tensor header at byte {start} is not valid")
        dtype, dims = _tensor_desc(_read(fh, desc_len, "a tensor description"))
        count = 1
        for d in dims:
            count *= d
        if fh.tell() + count * DTYPE_BYTES[dtype] > size:
            raise Damaged(f"the tensor at byte {start} (dims {list(dims)}) runs past the end of the file")
        fh.seek(count * DTYPE_BYTES[dtype], os.SEEK_CUR)
        shapes.append(dims)
    if not shapes:
        raise Damaged("it holds no tensor")
    return shapes


def _declared_shapes(program: object) -> Optional[List[Shape]]:
    """The parameter shapes a PIR ``inference.json`` declares (``None`` for another layout)."""
    try:
        ops = program["program"]["regions"][0]["blocks"][0]["ops"]  # type: ignore[index]
        return [tuple(int(d) for d in op["O"]["TT"]["D"][1]) for op in ops if op.get("#") == "p"]
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


@functools.lru_cache(maxsize=32)
def _checked(program: str, params: str, states: Tuple[Tuple[int, int], ...]) -> Optional[str]:
    """Why the pair cannot be a model (``None`` when it can); ``states`` keys the memo."""
    name = Path(params).name
    try:
        with open(params, "rb") as fh:
            stored = _tensor_shapes(fh, states[1][0])
    except Damaged as exc:
        return f"{name} is damaged: {exc}"
    if states[0][0] == 0:
        return f"{Path(program).name} is empty"
    if not program.endswith(".json"):
        return None
    try:
        with open(program, "rb") as fh:
            doc = json.loads(fh.read())
    except ValueError as exc:
        return f"{Path(program).name} is not valid JSON (cut short?): {str(exc)[:120]}"
    declared = _declared_shapes(doc)
    if declared is not None and sorted(declared) != sorted(stored):
        return (f"{name} does not hold the parameters {Path(program).name} declares ({len(declared)} expected, "
                f"{len(stored)} stored, or other shapes)")
    return None


def check_paddle_files(program: Path, params: Path) -> None:
    """Raise a one-line :class:`ModelError` when the program or its parameters are damaged."""
    states = tuple((st.st_size, st.st_mtime_ns) for st in (os.stat(program), os.stat(params)))
    why = _checked(str(program), str(params), states)
    if why is not None:
        raise ModelError(f"model folder {program.parent}: {why}", hint=HINT)


def check_onnx_file(path: Path) -> None:
    """An ONNX file onnxruntime may open (its own errors are Python exceptions): not empty."""
    if os.stat(path).st_size == 0:
        raise ModelError(f"model folder {path.parent}: {path.name} is empty", hint=HINT)
