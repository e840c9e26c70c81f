"""Reading YAML a user hands over (``-c file.yaml``) without trusting it.

A config file is small text. What is refused, each with one line naming the file: a path that is
missing, a folder, a FIFO or a device (never opened, so a FIFO cannot block), more than
``MAX_BYTES``, bytes that are not UTF-8, YAML that does not parse, nesting deeper than the parser
handles, and aliases that expand to more than ``MAX_VALUES`` values ("billion laughs": PyYAML
shares aliased nodes, so the bomb only goes off when something walks or prints the document, as
error messages and deep copies do; the bound is checked before anything does).
"""
from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any, Dict, Optional, Union

import yaml

from imgfeat_cli.common.errors import ConfigError, clip

MAX_BYTES = 4 << 20
MAX_VALUES = 100_000
#: A number as YAML 1.2 (and JSON, and any person) writes it. PyYAML implements YAML 1.1, whose
#: floats need a dot and a signed exponent, so ``1e-4``, ``5e-3`` and ``1E5`` come back as strings.
_NUMBER = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?")


def parse_number(text: str, integer: bool = False) -> Optional[Union[int, float]]:
    """The one reader of numbers written as text in a config (``-o`` values and ``-c`` files):
    ``text`` as an int or float when it is a plain decimal number, exponents included, else
    ``None``. With ``integer`` only whole numbers are taken (``1e3`` is 1000; ``1.5`` is not one)."""
    stripped = text.strip()
    if len(stripped) > 64 or not _NUMBER.fullmatch(stripped) or not any(c.isdigit() for c in stripped):
        return None
    body = stripped.replace("_", "")
    if re.fullmatch(r"[-+]?[0-9]+", body):
        return int(body)
    value = float(body)
    if integer:
        return int(value) if value.is_integer() and abs(value) < 2 ** 63 else None
    return value


def expanded_size(doc: Any, limit: int = MAX_VALUES) -> int:
    """How many values ``doc`` holds once aliases are expanded, counted without expanding (shared
    nodes are sized once); stops counting past ``limit``."""
    sizes: Dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key not in sizes:
            sizes[key] = limit + 1  # a node that contains itself is unbounded
            children = list(node.values()) if isinstance(node, dict) else node
            total = 1
            for child in children:
                total += size(child)
                if total > limit:
                    break
            sizes[key] = min(total, limit + 1)
        return sizes[key]

    return size(doc)


def read_config_text(path: str) -> str:
    """The text of config file ``path``, refusing what is not a small regular UTF-8 file."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ConfigError(f"config file {clip(path)} does not exist", hint="check the path given to -c") from None
    except OSError as exc:
        raise ConfigError(f"config file {clip(path)} cannot be read: {(exc.strerror or str(exc)).lower()}",
                          hint="check the path given to -c") from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"config file {clip(path)} is a folder", hint="give -c a YAML file, e.g. -c config.yaml")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"config file {clip(path)} is not a regular file (a FIFO or a device?)",
                          hint="give -c a YAML file")
    if st.st_size > MAX_BYTES:
        raise ConfigError(f"config file {clip(path)} is {st.st_size / 1e6:.1f} MB; a config file is a few KB "
                          f"(limit {MAX_BYTES >> 20} MB)", hint="check that -c names the YAML config")
    with open(p, "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {clip(path)} is not UTF-8 text (byte 0x{data[exc.start:exc.start + 1].hex()} "
                          f"at offset {exc.start})", hint="save it as UTF-8, or check that -c names the YAML config") from None


def load_yaml_file(path: str) -> Dict[str, Any]:
    """Parse config file ``path`` into a mapping of sections (see the module docstring)."""
    text = read_config_text(path)
    try:
        data = yaml.safe_load(text)
    except ValueError as exc:  # PyYAML converts, e.g., an integer of thousands of digits
        raise ConfigError(f"config file {clip(path)} holds a value that cannot be read: {clip(exc)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {clip(path)}{where} is not valid YAML: {clip(' '.join(str(problem).split()))}",
                          hint="check the file; PaddleX module configs are plain YAML mappings") from None
    except RecursionError:
        raise ConfigError(f"config file {clip(path)} is nested too deeply to be a config") from None
    if data is None:
        return {}
    if expanded_size(data) > MAX_VALUES:
        raise ConfigError(f"config file {clip(path)}: its YAML aliases expand to more than {MAX_VALUES:,} values",
                          hint="a config needs no such aliases (a YAML 'billion laughs'?); write the values out")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {clip(path)} must hold a mapping of sections, got {type(data).__name__}",
                          hint="sections at the top level, e.g. 'Global: {model: PP-ShiTuV2_rec}'")
    return data
