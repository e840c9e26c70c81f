"""Layered, schema-validated configuration.

Resolution order: schema defaults <- ``-c file.yaml`` <- each ``-o Section.key=value`` in order <-
explicit command-line flags. Values of ``-o`` are parsed as YAML scalars or flow collections
(``3``, ``0.1``, ``true``, ``[1, 5]``, ``null``); nothing is ever ``eval``-ed, unlike upstream. The
merged document is validated once against ``schemas/<command>.schema.json``; errors name the key
path, the bad value, what is allowed, and the closest valid key for a typo.

Defaults live in the schemas (``default`` keywords) so there is exactly one place that states them.
"""
from __future__ import annotations

import copy
import difflib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import yaml

from imgfeat_cli.common.errors import ConfigError

Config = Dict[str, Any]


def schema_dir() -> Path:
    """Locate ``schemas/``: packaged in the wheel as ``imgfeat_cli/schemas``, or at the repo root
    for editable installs and source checkouts."""
    here = Path(__file__).resolve().parent.parent
    for cand in (here / "schemas", here.parent / "schemas"):
        if (cand / "sections.schema.json").is_file():
            return cand
    raise ConfigError("the JSON schemas shipped with imgfeat were not found",
                      hint="reinstall the package (pip install --force-reinstall imgfeat)")


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


def _deref(node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    file_part, _, pointer = ref.partition("#")
    doc = load_schema(file_part.replace(".schema.json", "")) if file_part else {}
    for part in pointer.strip("/").split("/"):
        doc = doc[part]
    return _deref(doc)


def _sub_schema(name: str, path: Sequence[str]) -> Optional[Mapping[str, Any]]:
    node: Mapping[str, Any] = _deref(load_schema(name))
    for key in path:
        props = node.get("properties", {})
        if key not in props:
            return None
        node = _deref(props[key])
    return node


def defaults(name: str) -> Config:
    """The built-in defaults of command ``name``, read from the schema's ``default`` keywords."""

    def build(node: Mapping[str, Any]) -> Any:
        node = _deref(node)
        if node.get("type") == "object" and "properties" in node:
            return {k: build(v) for k, v in node["properties"].items()}
        return copy.deepcopy(node.get("default"))

    return build(load_schema(name))


def all_key_paths(name: str) -> List[str]:
    """Every leaf key path (``Train.batch_size``) of a command's schema, for typo suggestions."""
    out: List[str] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        node = _deref(node)
        props = node.get("properties")
        if props and node.get("type", "object") == "object":
            for k, v in props.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
        elif prefix:
            out.append(prefix)

    walk(load_schema(name), "")
    return out


def suggest(bad: str, candidates: Iterable[str]) -> Optional[str]:
    """Closest candidate to ``bad``: a prefix/substring match first, else difflib similarity."""
    cands = list(candidates)
    low = bad.lower()
    tail = low.rsplit(".", 1)[-1]
    for c in cands:
        ctail = c.lower().rsplit(".", 1)[-1]
        if tail and (ctail.startswith(tail) or tail.startswith(ctail)) and c.lower().startswith(low.rsplit(".", 1)[0]):
            return c
    match = difflib.get_close_matches(bad, cands, n=1, cutoff=0.5)
    if not match:
        by_lower = {c.lower(): c for c in cands}
        match = [by_lower[m] for m in difflib.get_close_matches(low, list(by_lower), n=1, cutoff=0.5)]
    return match[0] if match else None


def parse_override(text: str) -> Tuple[List[str], Any]:
    """Split ``Section.key=value`` into a key path and a YAML-parsed value."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {text!r}: expected Section.key=value",
                          hint="for example -o Train.epochs_iters=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad value in override {text!r}: not a YAML scalar ({exc.__class__.__name__})",
                          hint="quote strings containing ':' or '#', e.g. -o 'Global.output=\"a:b\"'") from None
    if isinstance(value, (dict,)) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
        raise ConfigError(f"bad value in override {text!r}: only scalars and flat lists are allowed")
    return key.split("."), (value, raw)


def _coerce_for_schema(name: str, path: Sequence[str], value: Any, raw: str) -> Any:
    """YAML turns ``on``/``123`` into bool/int; where the key accepts only strings keep the text."""
    node = _sub_schema(name, path)
    if node is not None and value is not None and not isinstance(value, str):
        types = node.get("type")
        types = [types] if isinstance(types, str) else (types or [])
        if types and "string" in types and not any(
                t in types for t in ("integer", "number", "boolean", "array")):
            return raw.strip()
    return value


def _set(cfg: Config, path: Sequence[str], value: Any) -> None:
    node = cfg
    for i, key in enumerate(path[:-1]):
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            if nxt is not None:
                raise ConfigError(f"cannot set {'.'.join(path)}: {'.'.join(path[:i + 1])} is not a section")
            nxt = node[key] = {}
        node = nxt
    node[path[-1]] = value


def _merge(base: Config, over: Mapping[str, Any]) -> Config:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def load_yaml_file(path: str) -> Config:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist", hint="check the path given to -c")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _describe_allowed(schema: Mapping[str, Any]) -> str:
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(v) for v in schema["enum"])
    types = schema.get("type")
    types = list(types) if isinstance(types, list) else [str(types or "value")]
    nullable = "null" in types and len(types) > 1
    parts = [" or ".join(t for t in types if t != "null" or not nullable)]
    if "minimum" in schema and "maximum" in schema:
        parts.append(f"from {schema['minimum']} to {schema['maximum']}")
    else:
        for kw, sym in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
            if kw in schema:
                parts.append(f"{sym} {schema[kw]}")
    if "pattern" in schema:
        parts.append(f"matching {schema.get('description') or schema['pattern']}")
    if nullable:
        parts.append("(or null)")
    return " ".join(parts)


def _origin(source: Mapping[str, str], dotted: str) -> str:
    """Where a key's value came from: the override or file that set it or one of its sections."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in source:
            return source[".".join(parts[:i])]
    return next((v for k, v in source.items() if k.startswith(dotted + ".")), "")


def _format_error(name: str, err: Any, source: Mapping[str, str]) -> ConfigError:
    path = [str(p) for p in err.absolute_path]
    where = ".".join(path) or "(top level)"
    if err.validator == "additionalProperties":
        allowed = set(err.schema.get("properties", {}))
        unknown = sorted(k for k in err.instance if k not in allowed)
        bad = ".".join(path + [unknown[0]]) if unknown else where
        hint_key = suggest(bad, all_key_paths(name) + sorted({p.split(".")[0] for p in all_key_paths(name)}))
        origin = _origin(source, bad)
        msg = f"unknown config key {bad}{origin}"
        hint = f"did you mean {hint_key}?" if hint_key else f"valid keys here: {', '.join(sorted(allowed))}"
        return ConfigError(msg, hint=hint)
    origin = _origin(source, where)
    allowed = _describe_allowed(err.schema)
    return ConfigError(f"config key {where}{origin}: got {json.dumps(err.instance, ensure_ascii=False)}, "
                       f"expected {allowed}", hint=None if err.validator in _SELF_EXPLAINED else err.message)


_SELF_EXPLAINED = {"type", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}


def resolve(name: str, config_file: Optional[str] = None, overrides: Sequence[str] = (),
            flags: Optional[Mapping[str, Any]] = None) -> Config:
    """Resolve and validate the configuration of command ``name``.

    ``flags`` maps dotted key paths (``Global.dataset_dir``) to values given by dedicated CLI
    options; ``None`` values are ignored so unset options do not clobber the file.
    """
    cfg = defaults(name)
    source: Dict[str, str] = {}
    if config_file:
        data = load_yaml_file(config_file)
        for key in data:
            source.setdefault(str(key), f" (from {config_file})")
        _merge(cfg, data)
    for text in overrides:
        path, (value, raw) = parse_override(text)
        _set(cfg, path, _coerce_for_schema(name, path, value, raw))
        source[".".join(path)] = f" (from -o {text})"
    for dotted, value in (flags or {}).items():
        if value is not None:
            _set(cfg, dotted.split("."), value)
    errors = sorted(validator(name).iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if errors:
        raise _format_error(name, errors[0], source)
    return cfg


def dump_yaml(cfg: Config) -> str:
    """Serialise a resolved config the way it is saved beside outputs."""
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
