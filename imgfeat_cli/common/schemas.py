"""The JSON schemas in ``schemas/``: loading, validators, defaults and key paths.

``schemas/<command>.schema.json`` describe each command's configuration (``$ref`` into
``sections.schema.json`` for the PaddleX sections). They are the one place defaults are stated
(``default`` keywords), and the one place a PaddleX key imgfeat accepts but does not use is
declared, with ``"x-paddlex-unused": "<why>"``.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from imgfeat_cli.common.errors import ConfigError

Config = Dict[str, Any]

#: The schema annotation marking a PaddleX key that imgfeat accepts and ignores (value: why).
UNUSED = "x-paddlex-unused"


def schema_dir() -> Path:
    """Locate ``schemas/``: packaged in the wheel as ``imgfeat_cli/schemas``, or at the repo root
    for editable installs and source checkouts."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "schemas", here.parent / "schemas"):
        if (cand / "sections.schema.json").is_file():
            return cand
    raise ConfigError("the JSON schemas shipped with imgfeat were not found",
                      hint="reinstall imgfeat (in its clone: pip install -e .)")


@lru_cache(maxsize=None)
def load_schema(name: str) -> Dict[str, Any]:
    """Load ``schemas/<name>.schema.json`` (cached)."""
    path = schema_dir() / f"{name}.schema.json"
    if not path.is_file():
        raise ConfigError(f"no schema named {name!r} in {schema_dir()}")
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def _registry() -> Any:
    from referencing import Registry, Resource

    resources = []
    for p in sorted(schema_dir().glob("*.schema.json")):
        doc = json.loads(p.read_text(encoding="utf-8"))
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


def validator(name: str) -> Any:
    """A Draft 2020-12 validator for schema ``name`` with cross-file ``$ref`` resolution."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(load_schema(name), registry=_registry())


def deref(node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    file_part, _, pointer = ref.partition("#")
    doc = load_schema(file_part.replace(".schema.json", "")) if file_part else {}
    for part in pointer.strip("/").split("/"):
        doc = doc[part]
    return deref(doc)


def sub_schema(name: str, path: Sequence[str]) -> Optional[Mapping[str, Any]]:
    node: Mapping[str, Any] = deref(load_schema(name))
    for key in path:
        props = node.get("properties", {})
        if key not in props:
            return None
        node = deref(props[key])
    return node


def defaults(name: str) -> Config:
    """The built-in defaults of command ``name``, read from the schema's ``default`` keywords."""

    return build_default(load_schema(name))


def build_default(node: Mapping[str, Any]) -> Any:
    node = deref(node)
    if node.get("type") == "object" and "properties" in node:
        return {k: build_default(v) for k, v in node["properties"].items() if UNUSED not in deref(v)}
    return copy.deepcopy(node.get("default"))


def all_key_paths(name: str) -> List[str]:
    """Every leaf key path (``Train.batch_size``) of a command's schema, for typo suggestions."""
    out: List[str] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        node = deref(node)
        props = node.get("properties")
        if UNUSED in node:
            return
        if props and node.get("type", "object") == "object":
            for k, v in props.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        elif prefix:
            out.append(prefix)

    walk(load_schema(name), "")
    return out
