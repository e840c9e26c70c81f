"""How help pages are made: shown defaults read from the schema, option panels, per-command ``-o``
examples, example blocks, and the command classes that keep type placeholders out of the page.

Options default to ``None`` in the signatures because the real defaults live in
``schemas/sections.schema.json`` (defaults <- ``-c`` <- ``-o`` <- flags). ``shown_default`` reads
the schema so a help page never restates a number; a ``null`` default that is worked out at run
time is described in words at the option.
"""
from __future__ import annotations

import os
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typing_extensions import Annotated

from imgfeat_cli.common.schemas import deref, load_schema

#: Option panels (``rich_help_panel``), in the order a reader needs them (options without a
#: panel, a command's own, come first under "Options").
PANELS = INPUT, MODEL, OUTPUT, PERFORMANCE, RAY, CONFIG = ("Input", "Model", "Output", "Performance", "Ray cluster",
                                                           "Config & output mode")


def schema_node(key: str) -> Mapping[str, Any]:
    """The schema of ``Section.key`` (``CheckDataset.split.seed``); a KeyError names a key that
    does not exist, so a help page cannot cite one."""
    section, *path = key.split(".")
    node = deref(load_schema("sections")["$defs"][section])
    for part in path:
        node = deref(node["properties"][part])
    return node


def schema_default(key: str) -> Any:
    return schema_node(key).get("default")


def shown_default(key: str, when_null: Optional[str] = None, bools: Tuple[str, str] = ("true", "false")) -> str:
    """The ``show_default`` text of an option that sets ``key``: the schema's default, or, where
    the schema says ``null`` (worked out at run time), ``when_null`` in words."""
    value = schema_default(key)
    if value is None:
        if when_null is None:
            raise ValueError(f"{key} defaults to null: say what that means (when_null=...)")
        return when_null
    if isinstance(value, bool):
        return bools[0] if value else bools[1]
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def override_opt(example: str) -> Any:
    """The ``-o/--override`` option type of a command, with an example from a section it reads."""
    schema_node(example.partition("=")[0])  # the example must name a real key
    return Annotated[Optional[List[str]], typer.Option(
        "--override", "-o", metavar="KEY=VALUE", rich_help_panel=CONFIG, show_default=False,
        help=f"Override a config key, e.g. -o {example} (repeatable; YAML values).")]


def examples(*lines: str) -> str:
    """An ``epilog`` of example command lines, kept one per line by Rich and by plain output
    (the ``\\b`` paragraph marker stops the plain formatter re-wrapping them)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def tidy_params(params: Sequence[Any]) -> List[Any]:
    """The parameters as the help page lists them: panels in ``PANELS`` order (``--help`` joins the
    last one when there are panels), no value placeholder for a flag (typer 0.29 prints
    ``<bool>``), and an argument with a metavar shows that metavar, not its Python type
    (``<list[str]>``) as well."""
    panelled = any(getattr(p, "rich_help_panel", None) for p in params)
    for param in params:
        if isinstance(param.show_default, str):  # one way for every default: [default: 50], never (50)
            shown = f"[default: {param.show_default}]"
            param.help = f"{param.help or ''} {escape(shown) if rich_help() else shown}".strip()
            param.show_default = False
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
            if panelled and "--help" in param.opts and param.rich_help_panel is None:
                param.rich_help_panel = CONFIG
        elif isinstance(param, TyperArgument) and param.metavar and not isinstance(param, NamedArgument):
            param.__class__ = NamedArgument
    order = {name: i + 1 for i, name in enumerate(PANELS)}
    return sorted(params, key=lambda p: order.get(getattr(p, "rich_help_panel", None) or "", 0))


def rich_help() -> bool:
    """Whether typer renders help with rich (where ``[...]`` in a help text is markup); off with
    Typer's documented ``TYPER_USE_RICH=0``."""
    return os.getenv("TYPER_USE_RICH", "1").strip().lower() not in ("0", "false", "no", "off", "n", "f")


class NamedArgument(TyperArgument):
    """A positional argument whose metavar (``IMAGES``, ``DIR``) replaces the type column, as
    typer's own options do."""

    def display_type_rich(self, ctx: Any) -> Optional[str]:
        return None

    def get_usage_pieces(self, ctx: Any) -> List[str]:
        """``MODEL_DIR`` (required) or ``[IMAGES]...`` on the usage line, as click writes them
        (typer 0.29 wraps a required argument in braces: ``{MODEL_DIR}``)."""
        name = self.metavar or (self.name or "").upper()
        name = name if self.required else f"[{name}]"
        return [name + ("..." if self.nargs != 1 else "")]


class TidyParams:
    """Mixin for command and group classes: ``tidy_params`` over every parameter, ``--help`` too."""

    def get_params(self, ctx: Any) -> List[Any]:
        return tidy_params(super().get_params(ctx))  # type: ignore[misc]


def unwrap(text: Optional[str]) -> Optional[str]:
    """``text`` with the line breaks inside each paragraph turned into spaces: typer's rich help
    keeps a docstring's source line breaks, so a paragraph wrapped at 100 columns in the source
    broke mid-sentence on a wider terminal and left short lines on a narrow one. A paragraph that
    starts with ``\\b`` or holds indented lines (examples, tables) keeps its layout."""
    if not text:
        return text
    paragraphs = text.split("\n\n")
    return "\n\n".join(p if p.startswith("\b") or "\n " in p else " ".join(p.split("\n")) for p in paragraphs)


class ImgfeatCommand(TidyParams, TyperCommand):
    """The class of every imgfeat command (``cls=``); its help paragraphs flow to the terminal's width."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = unwrap(self.help)


class ImgfeatSubGroup(TidyParams, TyperGroup):
    """The class of ``imgfeat index`` and ``imgfeat download``."""
