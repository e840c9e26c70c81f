"""Layered, schema-validated configuration.

Resolution order: schema defaults <- ``-c file.yaml`` <- each ``-o Section.key=value`` in order <-
explicit command-line flags. Values of ``-o`` are parsed as YAML scalars or flow collections
(``3``, ``0.1``, ``true``, ``[1, 5]``, ``null``); nothing is ever ``eval``-ed, unlike upstream. The
merged document is validated once against ``schemas/<command>.schema.json``; errors name the key
path, the bad value, what is allowed, and the closest valid key for a typo.

Defaults live in the schemas (``default`` keywords) so there is exactly one place that states them.

PaddleX module configs carry keys imgfeat has no use for (``Predict.kernel_option``...). Each is
declared once, in ``schemas/sections.schema.json``, with the annotation ``"x-paddlex-unused": "<why>"``:
such keys validate whatever they hold, are reported in one note, and take no part in defaults or
"did you mean" suggestions. As in PaddleX, ``null`` means "not set": a key that cannot be null
falls back to its default.
"""
from __future__ import annotations

import copy
import difflib
import json
import math
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

import yaml

from imgfeat_cli.common.errors import ConfigError, clip
from imgfeat_cli.common.schemas import (UNUSED, Config, all_key_paths, build_default, defaults, deref, load_schema,
                                        schema_dir, sub_schema, validator)
from imgfeat_cli.common.yamlio import load_yaml_file, parse_number

__all__ = ["Config", "all_key_paths", "defaults", "dump_yaml", "load_schema", "parse_override",
           "resolve", "schema_dir", "show_value", "suggest", "validator"]


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


def _override_hint(key: str, output_option: Optional[str]) -> str:
    """What to suggest for ``-o`` text without ``=``: a key missing its value, or an output name."""
    if key.split(".")[0] in load_schema("sections")["$defs"]:
        return f"give a value: -o {clip(key, 60)}=VALUE"
    if output_option:
        return f"did you mean {output_option}? (-o sets a config key: -o Section.key=value)"
    return "-o sets a config key: -o Section.key=value, e.g. -o Global.device=cpu"


def parse_override(text: str, output_option: Optional[str] = None) -> Tuple[List[str], Any]:
    """Split ``Section.key=value`` into a key path and a YAML-parsed value."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad override {clip(repr(text))}: expected Section.key=value",
                          hint=_override_hint(key, output_option) if not sep else "for example -o Train.epochs_iters=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: an integer of thousands of digits
        raise ConfigError(f"bad value in override {clip(repr(text))}: not a YAML scalar ({exc.__class__.__name__})",
                          hint="quote strings containing ':' or '#', e.g. -o 'Global.output=\"a:b\"'") from None
    if isinstance(value, (dict,)) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
        raise ConfigError(f"bad value in override {clip(repr(text))}: only scalars and flat lists are allowed")
    return key.split("."), (value, raw)


def _coerce_for_schema(name: str, path: Sequence[str], value: Any, raw: str) -> Any:
    """YAML turns ``on``/``123`` into bool/int; where the key accepts only strings keep the text."""
    node = sub_schema(name, path)
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


def _brief(value: Any, depth: int = 0) -> Any:
    """``value`` with long strings and containers cut, for quoting in an error message."""
    if isinstance(value, str):
        return clip(value, 80)
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k)[:40]: (_brief(v, depth + 1) if depth < 2 else "...") for k, v in items[:5]}
        return {**out, "...": f"{len(items) - 5} more"} if len(items) > 5 else out
    if isinstance(value, list):
        out_l = [_brief(v, depth + 1) if depth < 2 else "..." for v in value[:5]]
        return out_l + [f"... {len(value) - 5} more"] if len(value) > 5 else out_l
    return value


def show_value(value: Any) -> str:
    """How an error message quotes a config value: JSON-like, never longer than a line."""
    return clip(json.dumps(_brief(value), ensure_ascii=False), 160)


def _format_error(name: str, err: Any, source: Mapping[str, str]) -> ConfigError:
    path = [str(p) for p in err.absolute_path]
    where = clip(".".join(path) or "(top level)")
    if err.validator == "additionalProperties":
        allowed = set(err.schema.get("properties", {}))
        unknown = sorted(str(k) for k in err.instance if k not in allowed)
        bad = ".".join(path + [unknown[0]]) if unknown else where
        hint_key = suggest(bad, all_key_paths(name) + sorted({p.split(".")[0] for p in all_key_paths(name)}))
        origin = _origin(source, bad)
        msg = f"unknown config key {clip(bad)}{origin}"
        hint = f"did you mean {hint_key}?" if hint_key else f"valid keys here: {', '.join(sorted(allowed))}"
        return ConfigError(msg, hint=hint)
    origin = _origin(source, where)
    allowed = _describe_allowed(err.schema)
    return ConfigError(f"config key {where}{origin}: got {show_value(err.instance)}, "
                       f"expected {allowed}", hint=None if err.validator in _SELF_EXPLAINED else clip(err.message))


_SELF_EXPLAINED = {"type", "enum", "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}


def _as_number(node: Optional[Mapping[str, Any]], value: Any) -> Any:
    """A string where the schema wants a number (and no string): the number it writes, as
    :func:`~imgfeat_cli.common.yamlio.parse_number` reads it (``1e-4``, which YAML 1.1 leaves a
    string); anything else unchanged, for the validator to judge."""
    if not isinstance(value, str) or not node or "enum" in node:
        return value
    types = node.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if "string" in types or not {"number", "integer"} & set(types):
        return value
    number = parse_number(value, integer="number" not in types)
    return value if number is None else number


def _accepts_null(node: Mapping[str, Any]) -> bool:
    if "enum" in node:
        return None in node["enum"]
    types = node.get("type")
    return types is None or types == "null" or (isinstance(types, list) and "null" in types)


def _scan(node: Optional[Mapping[str, Any]], value: Any, path: List[str], source: Mapping[str, str],
          unused: List[Tuple[str, str]]) -> None:
    """One walk over the merged config: read numbers written as text where a number is wanted,
    refuse NaN/inf, turn ``null`` into the default where the key cannot be null (PaddleX's "not
    set"), and collect PaddleX keys imgfeat ignores."""
    if isinstance(value, float) and not math.isfinite(value):
        where = ".".join(path)
        types = (node or {}).get("type") or "number"
        numeric = any(t in ("number", "integer") for t in ([types] if isinstance(types, str) else types))
        expected = "a finite number" if numeric or node is None else _describe_allowed(node)
        raise ConfigError(f"config key {clip(where)}{_origin(source, where)}: got {value}, expected {expected}")
    if isinstance(value, list):
        items = deref(node["items"]) if node and isinstance(node.get("items"), Mapping) else None
        for i, item in enumerate(value):
            value[i] = _as_number(items, item)
            _scan(None, value[i], path + [str(i)], source, unused)
        return
    if not isinstance(value, dict):
        return
    props = node.get("properties", {}) if node else {}
    for key, child in list(value.items()):
        sub = deref(props[key]) if key in props else None
        if sub is not None and UNUSED in sub:
            unused.append((".".join(path + [str(key)]), sub[UNUSED]))
        elif child is None and sub is not None and not _accepts_null(sub):
            value[key] = build_default(sub)
        else:
            value[key] = _as_number(sub, child)
            _scan(sub, value[key], path + [str(key)], source, unused)


def resolve(name: str, config_file: Optional[str] = None, overrides: Sequence[str] = (),
            flags: Optional[Mapping[str, Any]] = None, note: Optional[Callable[[str], None]] = None,
            output_option: Optional[str] = None, explicit: Optional[Set[str]] = None) -> Config:
    """Resolve and validate the configuration of command ``name``.

    ``flags`` maps dotted key paths (``Global.dataset_dir``) to values given by dedicated CLI
    options; ``None`` values are ignored so unset options do not clobber the file. ``note``
    receives one line naming the PaddleX keys that were accepted but are not used;
    ``output_option`` (``--out``) is suggested when an ``-o`` value looks like a file name.
    ``explicit``, when given, receives the dotted keys the user set (file, ``-o`` or flag), so a
    command can tell a default from a choice (``search`` uses its index's model unless one is named).
    """
    cfg = defaults(name)
    source: Dict[str, str] = {}
    if config_file:
        data = load_yaml_file(config_file)
        for key in data:
            source.setdefault(str(key), f" (from {clip(config_file)})")
        _merge(cfg, data)
        if explicit is not None:
            explicit.update(_dotted(data))
    for text in overrides:
        path, (value, raw) = parse_override(text, output_option)
        _set(cfg, path, _coerce_for_schema(name, path, value, raw))
        source[".".join(path)] = f" (from -o {clip(text)})"
        if explicit is not None:
            explicit.add(".".join(path))
    for dotted, value in (flags or {}).items():
        if value is not None:
            _set(cfg, dotted.split("."), value)
            if explicit is not None:
                explicit.add(dotted)
    unused: List[Tuple[str, str]] = []
    _scan(deref(load_schema(name)), cfg, [], source, unused)
    errors = sorted(validator(name).iter_errors(cfg), key=lambda e: (len(list(e.absolute_path)), str(e.message)))
    if errors:
        raise _format_error(name, errors[0], source)
    if unused and note is not None:
        note("accepted but not used by imgfeat (PaddleX keys): "
             + "; ".join(f"{clip(key)} ({why})" for key, why in unused))
    return cfg


def _dotted(data: Any, prefix: str = "") -> Iterator[str]:
    """The dotted key paths of the scalar (non-mapping) values in ``data``."""
    if isinstance(data, Mapping):
        for key, value in data.items():
            yield from _dotted(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1]


def dump_yaml(cfg: Config) -> str:
    """Serialise a resolved config the way it is saved beside outputs."""
    return yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
