"""The console script. It imports the CLI inside the Ctrl-C guard, so an interrupt during start-up
(importing typer, rich and the commands takes a moment) is one line and exit 130 like any other.
Nothing is imported at module level: the unguarded window is the interpreter's own start. Native
libraries (paddle...) are imported behind ``common.importguard``: a Ctrl-C takes effect once their
import is complete, never halfway through it."""
import sys


def main() -> None:
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
