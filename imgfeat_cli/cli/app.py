"""The ``imgfeat`` entry point. Command modules are imported here, but each imports its engine
lazily inside the command so ``imgfeat --help`` and ``--version`` never load paddle."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from imgfeat_cli import __version__

app = typer.Typer(
    name="imgfeat",
    help="Image feature extraction: PaddleX-compatible PP-ShiTuV2 / CLIP embeddings, dataset tools, evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imgfeat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None) -> None:
    """Exit codes: 0 ok, 1 error, 2 usage/config error, 3 dataset check failed, 4 some inputs skipped,
    130 interrupted. Set IMGFEAT_DEBUG=1 for tracebacks."""


def _register() -> None:
    from imgfeat_cli.cli import check, convert, download, embed, evaluate, export, index, search, split, train

    for mod in (check, convert, split, train, evaluate, embed, export, download, index, search):
        mod.register(app)


_register()


def main() -> None:
    app()
