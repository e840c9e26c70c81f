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
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, TypeVar

import typer
from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TaskID, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn, TransferSpeedColumn)
from typing_extensions import Annotated

from imgfeat_cli.common.errors import EXIT_ERROR, EXIT_INTERRUPTED, ImgfeatError

F = TypeVar("F", bound=Callable[..., Any])

# Shared option types: every command has the same shape (sqlite-utils style).
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout and nothing else.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or log output on stderr.")]
ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="YAML config file (PaddleX sections).",
                                                  show_default=False)]
OverrideOpt = Annotated[Optional[List[str]], typer.Option(
    "--override", "-o", help="Override a config key, e.g. -o Train.epochs_iters=10 (repeatable).",
    show_default=False)]

DatasetOpt = Annotated[Optional[str], typer.Option("--dataset", "-d", help="Dataset root (train/gallery/query.txt).",
                                                   show_default=False)]
ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Model name [default: PP-ShiTuV2_rec].",
                                                 show_default=False)]
ModelDirOpt = Annotated[Optional[str], typer.Option("--model-dir", help="Inference folder (exported or official).",
                                                    show_default=False)]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help=".pdparams checkpoint (run in dygraph).",
                                                   show_default=False)]
BackendOpt = Annotated[Optional[str], typer.Option(
    "--backend", help="paddle, onnxruntime, openvino or auto \\[default: the fastest exact engine, measured once "
    "per model and machine; paddle = as PaddleX runs it].", show_default=False)]
PrecisionOpt = Annotated[Optional[str], typer.Option(
    "--precision", help="fp32, bf16 (CPU with native bf16), fp16 (GPU) or auto \\[default: fp32; a quantized "
    "folder: int8].", show_default=False)]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, gpu or gpu:N.", show_default=False)]


def debug_enabled() -> bool:
    return os.environ.get("IMGFEAT_DEBUG", "") not in ("", "0", "false", "no")


class Output:
    """The single place that writes to the terminal for one command invocation."""

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet or json_mode
        self.out = Console(soft_wrap=True, highlight=False)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.interactive = self.err.is_terminal and not self.quiet

    # stdout -------------------------------------------------------------------------------------
    def result(self, renderable: Any) -> None:
        """A human-readable result on stdout (suppressed in --json mode)."""
        if not self.json_mode:
            self.out.print(renderable)

    def json(self, doc: Any) -> None:
        """The one JSON document of --json mode."""
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def emit(self, doc: Any, renderable: Any) -> None:
        """JSON in --json mode, else the rich rendering."""
        if self.json_mode:
            self.json(doc)
        else:
            self.result(renderable)

    # stderr -------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[yellow]Warning:[/yellow] {message}" if self.err.is_terminal else f"Warning: {message}")

    @contextmanager
    def progress(self, unit: str = "items") -> Iterator[Callable[[str, int, Optional[int]], None]]:
        """Yield an engine progress callback backed by a rich progress bar on stderr (or a no-op)."""
        if not self.interactive:
            yield lambda task, done, total: None
            return
        if unit == "bytes":
            columns = [TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn()]
        else:
            columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn(f"{unit}"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn()]
        tasks: dict = {}
        with Progress(*columns, console=self.err, transient=False) as bar:
            def update(task: str, done: int, total: Optional[int]) -> None:
                tid: Optional[TaskID] = tasks.get(task)
                if tid is None:
                    tid = tasks[task] = bar.add_task(task, total=total, rate="")
                t = bar.tasks[tid]
                rate = f"{done / t.elapsed:.1f}/s" if t.elapsed and done else ""
                bar.update(tid, completed=done, total=total, rate=rate)
            yield update


def report_error(exc: BaseException) -> int:
    """Print the one-line error (and hint) for ``exc`` to stderr; return its exit code."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if isinstance(exc, ImgfeatError):
        err.print(f"Error: {exc.message}", markup=False)
        if exc.hint:
            err.print(f"Hint: {exc.hint}", markup=False)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        err.print("Interrupted.", markup=False)
        return EXIT_INTERRUPTED
    err.print(f"Error: unexpected {exc.__class__.__name__}: {exc}", markup=False)
    err.print("Hint: rerun with IMGFEAT_DEBUG=1 for a traceback, and report it if it is a bug.", markup=False)
    return EXIT_ERROR


def handle_errors(fn: F) -> F:
    """Map domain errors to one-line messages and documented exit codes (the error table)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except (ImgfeatError, KeyboardInterrupt, Exception) as exc:  # noqa: BLE001 - this is the boundary
            if debug_enabled():
                traceback.print_exc()
            raise typer.Exit(report_error(exc)) from None

    return wrapper  # type: ignore[return-value]
