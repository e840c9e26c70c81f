"""The console script. It imports the CLI inside the Ctrl-C guard, so an interrupt during start-up
(importing typer, rich and the commands takes a moment) is one line and exit 130 like any other.
Nothing is imported at module level: the unguarded window is the interpreter's own start. Native
libraries (paddle...) are imported behind ``common.importguard``: a Ctrl-C takes effect once their
import is complete, never halfway through it.

A run that ends interrupted leaves the process through :func:`_end_interrupted`, not through the
interpreter's last step: CPython marks a ``KeyboardInterrupt`` that once left code run from a
string (``exec``/``eval`` of source text, as ``dataclasses`` and ``namedtuple`` do while modules
import) as unhandled, even when the program caught it, and then ends the process by SIGINT instead
of with its exit code (seen in CI: a Ctrl-C during start-up printed its one line, then the process
died by SIGINT, -2, not 130; cpython gh-128130 keeps the mark in 3.14)."""
import sys

#: The exit code an interrupted run ends with (empty: the interpreter ends the process as usual).
_INTERRUPTED_CODE: list = []


def _end_interrupted() -> None:
    """Registered first, so the last ``atexit`` callback to run: threads are joined and every
    other callback (stream workers stopped, queues closed) has run; only the interpreter's own
    teardown is left, which is where it would turn the exit code into a SIGINT."""
    if not _INTERRUPTED_CODE:
        return
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(_INTERRUPTED_CODE[0])


def main() -> None:
    import atexit

    atexit.register(_end_interrupted)
    try:
        _run()
    except SystemExit as exc:
        from imgfeat_cli.common.errors import EXIT_INTERRUPTED

        if exc.code == EXIT_INTERRUPTED:
            _INTERRUPTED_CODE.append(EXIT_INTERRUPTED)
        raise


def _run() -> None:
    try:
        from imgfeat_cli.common import importguard

        importguard.install()
        from imgfeat_cli.cli.app import app

        app()
    except KeyboardInterrupt:
        from imgfeat_cli.common.errors import CODE_INTERRUPTED, EXIT_INTERRUPTED, INTERRUPTED_MESSAGE, error_document

        try:
            sys.stderr.write(f"Error: {INTERRUPTED_MESSAGE}\n")
            sys.stderr.flush()
            if "--json" in sys.argv[1:]:  # before the CLI could take over: its promise all the same
                import json

                doc = error_document(CODE_INTERRUPTED, INTERRUPTED_MESSAGE, None, EXIT_INTERRUPTED)
                sys.stdout.write(json.dumps(doc, indent=2) + "\n")
                sys.stdout.flush()
        except (OSError, ValueError):
            pass
        sys.exit(EXIT_INTERRUPTED)
