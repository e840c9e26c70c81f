"""Reading the small text files datasets are made of (list files, ``flags.txt``, LabelMe JSON) the
way PaddleX does where that is sensible, and saying exactly what is wrong where it is not.

* A UTF-8 byte-order mark is dropped (PaddleX keeps it as part of the first path or class name, so
  its check reports an image that exists as missing: a quirk); the caller reports it.
* Lines end at ``\\n``; a ``\\r`` before it (Windows line endings) is dropped, as PaddleX's
  ``int(label)``/``strip()`` effectively do. Only ``\\n`` splits lines (``str.splitlines`` would also
  split a path at U+2028 or a form feed).
* Bytes that are not UTF-8: PaddleX's converters fall back to GBK, its dataset check fails. Files
  read with ``allow_gbk`` (class lists, annotations) do the same and say so; others are refused with
  the line, column and byte.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from imgfeat_cli.common.errors import DatasetError, UsageError, from_os_error
from imgfeat_cli.common.paths import not_a_file


@dataclass
class Decoded:
    text: str
    bom: bool = False
    encoding: str = "utf-8"
    crlf: bool = False
    #: where decoding failed (when it did): 1-based line and column, the offending byte, and every
    #: 1-based line number holding bytes that are not UTF-8
    bad_line: Optional[int] = None
    bad_column: Optional[int] = None
    bad_byte: Optional[int] = None
    bad_lines: Optional[List[int]] = None

    def lines(self) -> List[str]:
        """The lines, split on ``\\n`` only, each without its ``\\r``; no phantom last line."""
        parts = self.text.split("\n")
        if parts and parts[-1] == "":
            parts.pop()
        return [p[:-1] if p.endswith("\r") else p for p in parts]

    def describe_bad(self) -> str:
        return (f"not UTF-8 text: byte 0x{self.bad_byte:02x} at line {self.bad_line}, column {self.bad_column}"
                if self.bad_byte is not None else "")


def decode(data: bytes, allow_gbk: bool = False) -> Decoded:
    """Decode ``data``; on bytes that are not UTF-8 (and not GBK when allowed), ``text`` holds the
    decodable lines only (bad ones blanked) and ``bad_*`` say where the first problem is."""
    bom = data.startswith(codecs.BOM_UTF8)
    if bom:
        data = data[len(codecs.BOM_UTF8):]
    crlf = b"\r\n" in data
    try:
        return Decoded(data.decode("utf-8"), bom, "utf-8", crlf)
    except UnicodeDecodeError as exc:
        first = exc.start
    if allow_gbk:
        try:
            return Decoded(data.decode("gbk"), bom, "gbk", crlf)
        except UnicodeDecodeError:
            pass
    line_start = data.rfind(b"\n", 0, first) + 1
    bad_lines, kept = [], []
    for no, raw in enumerate(data.split(b"\n"), start=1):
        try:
            kept.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            bad_lines.append(no)
            kept.append("")
    return Decoded("\n".join(kept), bom, "utf-8", crlf, data.count(b"\n", 0, first) + 1,
                   first - line_start + 1, data[first], bad_lines)


def read_decoded(path: Path, allow_gbk: bool = False) -> Decoded:
    """``decode`` the file at ``path``; an unreadable file is a one-line dataset error."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}",
                           hint="check that it is a readable file") from None
    return decode(data, allow_gbk)


def line_list(numbers: List[int], limit: int = 10) -> str:
    """``line 3`` or ``lines 3, 7, 12 ... (40 lines)`` for messages that name lines."""
    if len(numbers) == 1:
        return f"line {numbers[0]}"
    shown = ", ".join(map(str, numbers[:limit]))
    return "lines " + shown + (f" ... ({len(numbers)} lines)" if len(numbers) > limit else "")


def split_labelled(line: str) -> Tuple[str, str]:
    """``(path, label)`` of a ``path<TAB or space>label`` line (PaddleX's gallery lists, PaddleClas'
    tab-separated ones): split once, at the first tab when there is one (paths may then hold
    spaces), else at the first space (labels may hold spaces); both sides stripped. Either may be
    empty when the line has no label."""
    text = line.strip()
    path, _, label = text.partition("\t" if "\t" in text else " ")
    return path.strip(), label.strip()


def read_label_lines(labels_file: str, rows: int, features: str) -> List[str]:
    """The labels of ``rows`` feature rows from a file of one label per line (``--labels``), each
    stripped. One reader for every command, so that a file means the same to each: lines end at
    ``\\n`` only (a U+2028 or form feed is part of a label, not a second one), trailing blank lines
    are fine, but a blank line among the labels is refused, since dropping it would shift every later
    label onto the wrong row; a NUL byte is refused too (it would end the label in C readers)."""
    problem = not_a_file(labels_file, "a labels file")
    if problem:
        raise UsageError(f"labels file {labels_file} {problem}", hint="give a text file, one label per line")
    try:
        data = Path(labels_file).read_bytes()
    except OSError as exc:
        raise from_os_error(exc) from None
    dec = decode(data)
    if dec.bad_byte is not None:
        raise UsageError(f"{labels_file}: {dec.describe_bad()}", hint="re-save the labels file as UTF-8")
    lines = dec.lines()
    while lines and not lines[-1].strip():
        lines.pop()
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            raise UsageError(f"{labels_file}:{no}: blank line among the labels; every feature row needs one",
                             hint="one label per line, in the gallery's row order, no gaps")
        if "\0" in line:
            raise UsageError(f"{labels_file}:{no}: the label holds a NUL byte", hint="remove it")
    if len(lines) != rows:
        raise UsageError(f"{labels_file} has {len(lines)} labels for {rows} features in {features}",
                         hint="one label per feature row, in the gallery's row order")
    return [line.strip() for line in lines]
