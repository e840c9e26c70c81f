"""Help pages as documentation (sqlite-utils style): every command and subcommand, discovered from
the Typer app, has examples, shows the schema default of every option that sets a config key,
shows no type placeholders or traces of eaten markup, and gives an ``-o`` example from a section it
reads. The expected defaults come from the commands' own ``cfgmod.resolve`` flag mappings and the
schema, so a new option without a shown default fails here."""
from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
import typer
from typer.testing import CliRunner

from imgfeat_cli.cli.app import app
from imgfeat_cli.cli.helpdoc import schema_node
from imgfeat_cli.common import errors
from imgfeat_cli.common.schemas import load_schema

PACKAGE = Path(__file__).resolve().parents[1] / "imgfeat_cli"
SECTIONS = set(load_schema("sections")["$defs"])
ENV = {"COLUMNS": "100", "TERM": "dumb"}


def discover(typer_app: typer.Typer, prefix: Tuple[str, ...] = ()) -> List[Tuple[Tuple[str, ...], Callable]]:
    """(command path, the command's own function) for every command and subcommand."""
    found = []
    for info in typer_app.registered_commands:
        found.append(((*prefix, info.name), inspect.unwrap(info.callback)))
    for group in typer_app.registered_groups:
        found.append(((*prefix, group.name), None))
        found += discover(group.typer_instance, (*prefix, group.name))
    return found


COMMANDS = discover(app)
LEAVES = [(path, fn) for path, fn in COMMANDS if fn is not None]


def render(path: Tuple[str, ...]) -> str:
    res = CliRunner().invoke(app, [*path, "--help"], env=ENV)
    assert res.exit_code == 0, res.output
    return res.output


def click_command(path: Tuple[str, ...]) -> Any:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def flag_keys(fn: Callable) -> Dict[str, str]:
    """``{parameter name: config key}`` from the flags dict of the command's ``resolve(...)`` call;
    a ``**helper(a, b)`` entry is expanded by calling the helper with the parameter names."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    params = set(inspect.signature(fn).parameters)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "resolve"]
    mapping: Dict[str, str] = {}

    def expand(helper_call: ast.Call) -> None:  # model_flags(model, ...): call it with the names
        from imgfeat_cli.cli import embedopts

        name = helper_call.func.id
        helper = fn.__globals__.get(name) or getattr(embedopts, name)
        names = [next((n.id for n in ast.walk(a) if isinstance(n, ast.Name) and n.id in params), None)
                 for a in helper_call.args]  # an argument may be an expression of the option
        mapping.update({name: k for k, name in helper(*names).items() if name is not None})

    for call in calls:
        flags = call.args[3] if len(call.args) > 3 else next((k.value for k in call.keywords if k.arg == "flags"), None)
        if isinstance(flags, ast.Call):
            expand(flags)
        for key, value in zip(flags.keys, flags.values) if isinstance(flags, ast.Dict) else ():
            if key is None:  # **model_flags(...)
                expand(value)
                continue
            name = next((n.id for n in ast.walk(value) if isinstance(n, ast.Name) and n.id in params), None)
            if name is not None:
                mapping[name] = key.value
    return mapping


def sections_read(fn: Callable) -> set:
    """Config sections a command sets through its flags or reads from its resolved config."""
    strings = [n.value for n in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(fn))))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return ({s for s in strings if s in SECTIONS} | {k.split(".")[0] for k in flag_keys(fn).values()})


def expects_default(param: Any, key: str) -> bool:
    """An option that sets ``key`` shows a default unless the schema's is a bare null, or the
    option is an on-only flag whose schema default is off (leaving it out is the default)."""
    node = schema_node(key)
    if node.get("default") is None and "null" not in node.get("description", ""):
        return False
    return not (param.is_flag and not param.secondary_opts and node.get("default") is False)


def test_discovery_finds_every_command():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"embed", "index build", "index info", "download url", "search", "quantize"} <= names
    assert len(LEAVES) >= 17


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_help_page_has_examples_and_no_placeholders(path):
    page = render(path)
    assert any(line.strip().startswith("imgfeat ") for line in page.splitlines()), "no example line"
    assert "<bool>" not in page and "<list[" not in page
    assert not re.search(r"<(str|int|float)>", page), "a value option without a metavar"
    assert not re.search(r"\S \.(\s|$)", page, re.M), "a space before a period: markup was eaten"
    # one vocabulary: defaults printed one way, plain metavars on the usage line, --out everywhere
    assert "[default: (" not in page, "a default printed in parentheses"
    usage = next(line for line in page.splitlines() if "Usage:" in line)
    assert "{" not in usage, usage
    assert "--output" not in page, "--output is a hidden alias of --out"


@pytest.mark.parametrize("path", [("embed",), ("search",), ("index", "build"), ("index", "add")])
def test_options_a_command_cannot_do_without_are_marked_required(path):
    cmd = click_command(path)
    required = {p.opts[0] for p in cmd.params if getattr(p, "required", False) and p.opts[0].startswith("--")}
    assert required == {"embed": {"--out"}, "search": {"--index"}, "build": {"--gallery", "--out"},
                        "add": {"--index", "--gallery"}}[path[-1]]
    assert "required" in render(path)


@pytest.mark.parametrize("path,fn", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_config_option_shows_its_schema_default(path, fn):
    cmd = click_command(path)
    keys = flag_keys(fn)
    ctx = cmd.make_context("imgfeat", [], resilient_parsing=True)
    expected = [p for p in cmd.params if p.name in keys and expects_default(p, keys[p.name])]
    for param in expected:
        record = param.get_help_record(ctx)
        assert record and "[default: " in record[1], f"{param.opts[0]} ({keys[param.name]}) shows no default"
    shown = sum(1 for p in cmd.get_params(ctx) if (p.get_help_record(ctx) or ("", ""))[1].count("[default: "))
    assert render(path).count("[default: ") == shown


@pytest.mark.parametrize("path,fn", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_override_example_names_a_section_the_command_reads(path, fn):
    cmd = click_command(path)
    override = next((p for p in cmd.params if p.name == "override"), None)
    if override is None:
        assert "resolve" not in inspect.getsource(fn), "a command with a config has no -o"
        return
    match = re.search(r"-o ([\w.]+)=", override.help)
    assert match, override.help
    key = match.group(1)
    schema_node(key)  # a real key
    assert key.split(".")[0] in sections_read(fn), f"{' '.join(path)} does not read {key}"
    assert f"-o {key}=" in " ".join(render(path).replace("│", " ").split())


@pytest.mark.parametrize("path,fn", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_command_functions_are_module_level(path, fn):
    assert "<locals>" not in fn.__qualname__, f"{fn.__qualname__} is nested"


def env_vars_read() -> set:
    pattern = re.compile(r"""environ(?:\.get\(|\[)\s*["']([A-Z0-9_]+)["']""")
    return {name for f in PACKAGE.rglob("*.py") for name in pattern.findall(f.read_text(encoding="utf-8"))}


def test_root_help_lists_exit_codes_and_environment():
    page = render(())
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_")}
    assert {0, 1, 2, 3, 4, 130} <= codes
    for code in codes:
        assert re.search(rf"^\s*{code}\s+\w", page, re.M), f"exit code {code} missing"
    names = env_vars_read()
    assert {"IMGFEAT_HOME", "IMGFEAT_DEBUG"} <= names
    for name in names:
        assert name in page, f"{name} is read by imgfeat but not in `imgfeat --help`"


@pytest.mark.parametrize("args", [["--help"], ["embed", "--help"]])
def test_plain_help_without_rich_keeps_lines(args):
    """TYPER_USE_RICH=0 (read at import): click's own formatter, which re-wraps unless ``\\b``."""
    res = subprocess.run([sys.executable, "-c", "from imgfeat_cli.cli.app import app; app()", *args],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, **ENV, "TYPER_USE_RICH": "0"})
    assert res.returncode == 0, res.stderr
    assert "<bool>" not in res.stdout and "<list[" not in res.stdout and "\b" not in res.stdout
    lines = [line.strip() for line in res.stdout.splitlines()]
    assert "imgfeat embed photos/ --out feats.parquet" in lines
    if args == ["--help"]:
        assert any(re.fullmatch(r"130\s+interrupted.*", line) for line in lines)


@pytest.mark.parametrize("columns", ["60", "200"])
def test_description_paragraphs_flow_to_the_terminal_width(columns):
    """A docstring's source line breaks are not kept: no line of a paragraph breaks before the
    terminal's edge when the next word would have fitted."""
    doc = inspect.getdoc(inspect.unwrap(dict((p, f) for p, f in LEAVES)[("quantize",)]))
    second = " ".join(doc.split("\n\n")[1].split())
    res = CliRunner().invoke(app, ["quantize", "--help"], env={**ENV, "COLUMNS": columns})
    lines = [ln.strip() for ln in res.output.split("╭")[0].splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith(second.split()[0]))
    para = lines[start:lines.index("", start)]
    assert " ".join(para) == second
    for line, nxt in zip(para, para[1:]):
        assert len(line) + 1 + len(nxt.split()[0]) > int(columns) - 2, f"broke early: {line!r}"


def test_unwrap_keeps_marked_and_indented_paragraphs():
    from imgfeat_cli.cli.helpdoc import unwrap

    assert unwrap("First.\n\nOne\nparagraph.\n\n\bkept\nas is\n\nTable:\n  a  1\n  b  2") == \
        "First.\n\nOne paragraph.\n\n\bkept\nas is\n\nTable:\n  a  1\n  b  2"
    assert unwrap(None) is None
