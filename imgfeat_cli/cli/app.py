"""The ``imgfeat`` entry point. Command modules are imported here, but each imports its engine
lazily inside the command so ``imgfeat --help`` and ``--version`` never load paddle.

Every error leaves in the same shape: ``Error: ...`` and ``Hint: ...`` on stderr, one line each,
the documented exit code and, under ``--json``, one error document on stdout (``cli.common.report``). Commands map their own errors (``cli.common.handle_errors``); the
root group below maps what Typer raises while parsing the command line (a bad value, an unknown
option, a missing argument) to the same lines with exit 2 instead of Typer's boxed message.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

import typer
from typer.core import TyperGroup
from typing_extensions import Annotated

from imgfeat_cli.common.version import __version__
from imgfeat_cli.cli.common import begin_invocation, report, report_error
from imgfeat_cli.cli.helpdoc import TidyParams, examples
from imgfeat_cli.common.errors import (CODE_USAGE, EXIT_BROKEN_PIPE, EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_INTERRUPTED,
                                       EXIT_OK, EXIT_PARTIAL, EXIT_USAGE)


def usage_error_line(exc: Any, argv: Sequence[str] = ()) -> int:
    """Print a command-line parsing error of Typer's (duck-typed: ``format_message``,
    ``exit_code``, ``ctx``) as ``Error:``/``Hint:`` lines; return the exit code (2). A missing
    ``--out`` beside ``-o FILE`` (a config override without ``=``) was meant as ``-O``: say so."""
    if type(exc).__name__ == "NoArgsIsHelpError":  # `imgfeat` alone: Typer has printed the help
        return EXIT_USAGE
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    hint = f"see '{ctx.command_path} --help'" if ctx is not None else "see 'imgfeat --help'"
    slip = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-o", "--override") and "=" not in argv[i + 1]),
                None)
    if slip is not None and "'--out'" in message:
        hint = f"did you mean --out/-O {slip}? (-o sets a config key: -o Section.key=value)"
    return report(CODE_USAGE,
                  message[0].lower() + message[1:] if message[:1].isupper() and message[1:2].islower() else message,
                  hint, int(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE))


class ImgfeatGroup(TidyParams, TyperGroup):
    """The root command: runs non-standalone and maps what escapes into one-line errors.

    Ctrl-C while Typer parses or dispatches would otherwise end silently with 130 (Typer turns
    it into ``Exit(130)``), so ``make_context`` and ``invoke`` report it like any other place."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise typer.Exit(report_error(exc)) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise typer.Exit(report_error(exc)) from None

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        begin_invocation(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except KeyboardInterrupt as exc:
            code = report_error(exc)
        except Exception as exc:  # noqa: BLE001 - parse errors and Abort, duck-typed
            if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
                code = usage_error_line(exc, list(args) if args is not None else sys.argv[1:])
            elif type(exc).__name__ == "Abort":  # Ctrl-C or EOF while Typer was prompting/parsing
                code = report_error(KeyboardInterrupt())
            else:
                code = report_error(exc)
        if standalone_mode:
            sys.exit(code)
        return code


#: The root page: what imgfeat is, then (each a \b block, so plain output keeps the lines) the exit
#: codes of common/errors.py and every environment variable imgfeat reads.
ROOT_HELP = f"""Image feature extraction: PaddleX-compatible PP-ShiTuV2 / CLIP embeddings, dataset tools, evaluation.

\b
Exit codes:
  {EXIT_OK}    ok
  {EXIT_ERROR}    error (I/O, model, network)
  {EXIT_USAGE}    usage or config error (nothing was touched)
  {EXIT_CHECK_FAILED}    a check failed (check: the dataset; quantize: the accuracy bar)
  {EXIT_PARTIAL}    finished, but some inputs were skipped (embed, search, index)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); the last complete state is kept for --resume
  {EXIT_BROKEN_PIPE}  the reader of stdout went away (| head): silent

\b
Environment:
  IMGFEAT_HOME=DIR      cache of models, datasets, engine choices (default ~/.cache/imgfeat)
  IMGFEAT_DEBUG=1       print tracebacks
  IMGFEAT_OFFLINE=1     never download; use only what is cached
  IMGFEAT_BASE_URL=URL  mirror of the official model and dataset server
  RAY_ADDRESS=ADDRESS   Ray cluster for embed --engine ray
  AWS_ENDPOINT_URL=URL  S3-compatible store for s3:// (or AWS_ENDPOINT_URL_S3), with
                        AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION
  OMP_NUM_THREADS=N     the cores this process may use (threads and streams follow it)"""

app = typer.Typer(
    name="imgfeat",
    cls=ImgfeatGroup,
    help=ROOT_HELP,
    epilog=examples("imgfeat download model PP-ShiTuV2_rec", "imgfeat embed photos/ --out feats.parquet",
                    "imgfeat embed --help"),
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
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
    """The root group: only --version; the page is ROOT_HELP."""


def _register() -> None:
    from imgfeat_cli.cli import (check, convert, download, embed, evaluate, export, index, quantize, search, serve,
                                 split, train)

    for mod in (check, convert, split, train, evaluate, embed, export, quantize, download, index, search, serve):
        mod.register(app)


_register()
