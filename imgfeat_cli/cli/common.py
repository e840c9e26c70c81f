"""What every command shares: the output object, the error table, and the common options.

One output object per invocation decides where things go: results to stdout (a table, a path, or
one JSON document with ``--json``), everything else (progress, logs, warnings) to stderr, and no
bars or colour when stderr is not a terminal or ``--quiet``/``--json`` is on.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, TypeVar

import typer
from rich.console import Console
from typing_extensions import Annotated

from imgfeat_cli.cli import progress as cli_progress
from imgfeat_cli.cli.helpdoc import CONFIG, MODEL, OUTPUT, PERFORMANCE, shown_default
from imgfeat_cli.cli.progress import PeriodicLines, rich_bar
from imgfeat_cli.common.errors import (CODE_INTERNAL, CODE_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_ERROR,
                                      EXIT_INTERRUPTED, EXIT_PARTIAL, INTERRUPTED_MESSAGE, as_imgfeat_error, clip,
                                      error_document)
from imgfeat_cli.common.system import DEFAULT_BATCH

F = TypeVar("F", bound=Callable[..., Any])

# Shared option types: every command has the same shape (sqlite-utils style). Each command makes
# its own -o option with helpdoc.override_opt(example), an example from a section it reads.
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.",
                                       rich_help_panel=CONFIG)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log output on stderr.",
                                        rich_help_panel=CONFIG)]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", metavar="FILE", rich_help_panel=CONFIG,
                                                  help="YAML config file (PaddleX sections).", show_default=False)]

DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", "-d", metavar="DIR",
                                                   help="Dataset root (train/gallery/query.txt).", show_default=False)]
OutDirOpt = Annotated[Optional[str], typer.Option("--out", "-O", metavar="DIR", rich_help_panel=OUTPUT,
                                                  help="Folder for the results, reports and the resolved config.",
                                                  show_default=shown_default("Global.output"))]
#: ``--output``, the name these commands had before ``--out`` was everyone's: still accepted, not shown.
OutputAliasOpt = Annotated[Optional[str], typer.Option("--output", metavar="DIR", hidden=True, show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", metavar="NAME", rich_help_panel=MODEL,
                                                 help="Model name (see `imgfeat download list`).",
                                                 show_default=shown_default("Global.model"))]
ModelDirOpt = Annotated[Optional[str], typer.Option("--model-dir", metavar="DIR", rich_help_panel=MODEL,
                                                    help="Inference folder (exported or official).", show_default=False)]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", metavar="FILE", rich_help_panel=MODEL,
                                                   help=".pdparams checkpoint (run in dygraph).", show_default=False)]
BackendOpt = Annotated[Optional[str], typer.Option(
    "--backend", metavar="NAME", rich_help_panel=MODEL,
    help="paddle, onnxruntime, openvino or auto (paddle = as PaddleX runs it).",
    show_default=shown_default("Predict.backend", "the fastest exact engine, measured once per model and machine"))]
PrecisionOpt = Annotated[Optional[str], typer.Option(
    "--precision", metavar="NAME", rich_help_panel=MODEL,
    help="fp32, bf16 (CPU with native bf16), fp16 (GPU) or auto.",
    show_default=shown_default("Predict.precision", "fp32; a quantized folder: int8"))]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", metavar="DEVICE", rich_help_panel=MODEL,
                                                  help="cpu, gpu or gpu:N.", show_default=shown_default("Global.device"))]
BatchSizeOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", "-b", metavar="N", rich_help_panel=PERFORMANCE, help="Images per forward pass.",
    show_default=shown_default("Predict.batch_size", f"{DEFAULT_BATCH['cpu']} on CPU, {DEFAULT_BATCH['gpu']} on GPU"))]
IndexDirOpt = Annotated[str, typer.Option("--index", "-i", metavar="DIR", help="Index folder.", show_default=False)]
AllowOtherOpt = Annotated[bool, typer.Option(
    "--allow-other-model", rich_help_panel=MODEL,
    help="Use vectors of a model other than the index's own (or the gallery's): a warning, recorded.")]


class Invocation:
    """What one run of a command has promised on stdout: whether ``--json`` was asked for (then
    stdout holds exactly one JSON document, an error included) and whether that document has been
    written. Reset by :func:`begin_invocation` at the start of every run (the CLI's root group;
    tests invoke the app many times in one process)."""

    json_requested = False
    json_written = False
    quiet = False


def begin_invocation(args: Sequence[str]) -> None:
    """A new command line: ``--json`` among its options (before a ``--``) asks for the JSON error
    document, even when Typer itself refuses the command line before any command runs. Warnings
    about an input that the library raises (``ImageWarning``) print as ``Warning:`` lines."""
    import warnings

    from imgfeat_cli.imaging import codecwarnings

    words = list(args)
    Invocation.json_requested = "--json" in (words[:words.index("--")] if "--" in words else words)
    Invocation.json_written = False
    Invocation.quiet = False
    codecwarnings.enable()
    if getattr(warnings.showwarning, "__name__", "") != "show_input_warning":
        warnings.showwarning = show_input_warning(warnings.showwarning)


def show_input_warning(default: Callable[..., None]) -> Callable[..., None]:
    """``warnings.showwarning`` that prints an ``ImageWarning`` as one ``Warning:`` line on stderr
    (nothing with --quiet/--json) and leaves every other warning to ``default``."""
    from imgfeat_cli.imaging.codecwarnings import ImageWarning

    def show_input_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
        if not issubclass(category, ImageWarning):
            default(message, category, *args, **kwargs)
        elif not Invocation.quiet:
            try:
                sys.stderr.write(f"Warning: {_one_line(str(message))}\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    return show_input_warning


def debug_enabled() -> bool:
    return os.environ.get("IMGFEAT_DEBUG", "") not in ("", "0", "false", "no")


class Output:
    """The single place that writes to the terminal for one command invocation.

    stdout: the result (a rich rendering; with ``--json`` one JSON document; with ``--quiet`` only
    the essential line, such as the output path). stderr: progress, logs, notes and warnings,
    silent with ``--quiet``/``--json``; a bar on a terminal, periodic lines otherwise."""

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.brief = quiet and not json_mode
        self.quiet = quiet or json_mode
        Invocation.quiet = self.quiet
        self.out = Console(soft_wrap=True, highlight=False)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.interactive = self.err.is_terminal and not self.quiet

    # stdout -------------------------------------------------------------------------------------
    def result(self, renderable: Any) -> None:
        """A human-readable result on stdout (suppressed in --json and --quiet mode)."""
        if not self.json_mode and not self.brief:
            self.out.print(renderable)

    def json(self, doc: Any) -> None:
        """The one JSON document of --json mode."""
        write_json_document(doc)

    def emit(self, doc: Any, renderable: Any, essential: Optional[str] = None) -> None:
        """The command's result: JSON in --json mode; in --quiet mode only ``essential`` (the
        output path, as plain text; nothing when None); else the rich rendering."""
        if self.json_mode:
            self.json(doc)
        elif self.brief:
            if essential is not None:
                sys.stdout.write(f"{essential}\n")
                sys.stdout.flush()
        else:
            self.out.print(renderable)

    # stderr -------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if not self.quiet:  # text, never markup: file names may hold [brackets]
            self.err.print(message, markup=False, highlight=False)

    def note(self, message: str) -> None:
        """Something worth knowing that needs no action (e.g. ignored PaddleX keys)."""
        if not self.quiet:
            self.err.print(f"Note: {message}", markup=False)

    def warn(self, message: str) -> None:
        if not self.quiet:  # the message is text, never markup: a path may hold [brackets]
            from rich.markup import escape

            self.err.print(f"[yellow]Warning:[/yellow] {escape(message)}" if self.err.is_terminal
                           else f"Warning: {message}", markup=self.err.is_terminal)

    def partial(self, failed: int, total: int, what: str, first: Sequence[Tuple[str, str]] = (),
                errors_file: Optional[str] = None) -> None:
        """Work finished but ``failed`` of ``total`` inputs were skipped: a warning line (shown even
        with --quiet/--json, as errors are: it explains exit 4), the first reasons (unless quiet)
        and where the rest are, then exit 4. The result was already printed; with --json its
        ``errors`` list holds the reasons."""
        if not failed:
            return
        where = f"; all reasons in {errors_file}" if errors_file else ""
        self.err.print(f"Warning: {failed} of {total} {what}{where}", markup=False, highlight=False)
        shown = list(first)[:5]
        for path, why in shown:
            self.warn(why if why.startswith(path) else f"{path}: {why}")
        if failed > len(shown) and not errors_file:
            self.warn(f"... and {failed - len(shown)} more")
        raise typer.Exit(EXIT_PARTIAL)

    @contextmanager
    def progress(self, unit: str = "items", interval: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic) -> Iterator[Callable[..., None]]:
        """Yield an engine progress callback: a rich bar on a terminal, a line every ``interval``
        seconds (default ``cli.progress.LINE_INTERVAL``) when stderr is a file or pipe, nothing
        with --quiet/--json."""
        if self.interactive:
            with rich_bar(self.err, unit) as update:
                yield update
        elif not self.quiet:
            every = cli_progress.LINE_INTERVAL if interval is None else interval
            yield PeriodicLines(lambda line: self.err.print(line, markup=False), unit, every, clock)
        else:
            yield lambda task, done, total, extra="": None


def _one_line(text: str) -> str:
    """Error output is one line per field, whatever the message holds."""
    return " ".join(str(text).split()) if "\n" in str(text) or "\r" in str(text) else str(text)


def write_json_document(doc: Any) -> None:
    """Write the invocation's one JSON document to stdout (and remember that it is written)."""
    Invocation.json_written = True
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_error(message: str, hint: Optional[str] = None) -> None:
    """``Error: ...`` and optionally ``Hint: ...`` on stderr, one line each."""
    lines = f"Error: {_one_line(message)}\n" + (f"Hint: {_one_line(hint)}\n" if hint else "")
    try:
        sys.stderr.write(lines)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or a broken pipe: nothing more to say
        pass


def report(code: str, message: str, hint: Optional[str], exit_code: int) -> int:
    """The one way a failure leaves: ``Error:``/``Hint:`` lines on stderr and, under ``--json``
    when the command has not printed its result document yet, the error document on stdout
    (``{"error": {"code", "message", "hint", "exit_code"}}``). Returns ``exit_code``."""
    print_error(message, hint)
    if Invocation.json_requested and not Invocation.json_written:
        try:
            write_json_document(error_document(code, _one_line(message), _one_line(hint) if hint else None,
                                               exit_code))
        except (OSError, ValueError):  # stdout closed: the exit code still tells
            pass
    return exit_code


def report_error(exc: BaseException) -> int:
    """Report ``exc`` (see :func:`report`); return its exit code.

    Domain errors carry their own message and exit code; ordinary OS and decoding failures are
    mapped by ``errors.as_imgfeat_error``; anything else is a bug and says so."""
    if isinstance(exc, KeyboardInterrupt):
        return report(CODE_INTERRUPTED, INTERRUPTED_MESSAGE, None, EXIT_INTERRUPTED)
    known = as_imgfeat_error(exc)
    if known is not None:
        return report(known.code, known.message, known.hint, known.exit_code)
    return report(CODE_INTERNAL, f"unexpected {exc.__class__.__name__}: {clip(exc, 300)}",
                  "rerun with IMGFEAT_DEBUG=1 for a traceback, and report it if it is a bug.", EXIT_ERROR)


def handle_errors(fn: F) -> F:
    """Map domain errors to one-line messages and documented exit codes (the error table)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("json_"):
            Invocation.json_requested = True
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BrokenPipeError:
            # the reader of stdout has gone (`| head`): nothing to say to anyone; stdout is pointed at
            # /dev/null so the interpreter's final flush cannot fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except (KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - this is the boundary
            if debug_enabled():
                traceback.print_exc()
            raise typer.Exit(report_error(exc)) from None

    return wrapper  # type: ignore[return-value]
