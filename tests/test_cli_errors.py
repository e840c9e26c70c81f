"""The shared error mechanism (issue 12, issue 16): ordinary OS and decoding failures, Typer's own
usage errors, Ctrl-C at start-up and while parsing, and a cache folder that cannot be written all
leave as one ``Error:`` line (plus an optional ``Hint:``) with the documented exit code."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from imgfeat_cli.cli.app import ImgfeatGroup
from imgfeat_cli.cli.common import handle_errors
from imgfeat_cli.common.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, reading
from test_ordinary_errors import error_lines, unwritable_folder

REPO = Path(__file__).resolve().parents[1]


def app_raising(exc: BaseException) -> typer.Typer:
    """A one-command app, set up as imgfeat's, whose command raises ``exc``."""
    app = typer.Typer(cls=ImgfeatGroup)

    @app.command()
    @handle_errors
    def run() -> None:
        raise exc

    @app.command()
    def other() -> None:  # two commands, so `run` is a subcommand as in imgfeat
        pass

    return app


@pytest.mark.parametrize("exc,code,words", [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/in/x.jpg"), EXIT_USAGE,
     ["/data/in/x.jpg does not exist"]),
    (PermissionError(errno.EACCES, "Permission denied", "/ro/out.jsonl"), EXIT_ERROR,
     ["permission denied: /ro/out.jsonl"]),
    (PermissionError(errno.EPERM, "Operation not permitted", "/ro/x"), EXIT_ERROR, ["operation not permitted: /ro/x"]),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/f"), EXIT_ERROR, ["/mnt/ro/f is on a read-only file system"]),
    (OSError(errno.ENOSPC, "No space left on device", "/full/f.part"), EXIT_ERROR,
     ["no space left on the device holding /full/f.part"]),
    (OSError(errno.ENOSPC, "No space left on device"), EXIT_ERROR, ["no space left on device"]),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/out/dir"), EXIT_USAGE, ["/out/dir is a folder"]),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"), EXIT_USAGE, ["/f/x: a part of this path is a file"]),
    (OSError(errno.ENAMETOOLONG, "File name too long", "/t/" + "n" * 5000), EXIT_USAGE,
     ["file name too long: /t/nnn", "(5003 characters)"]),
    (OSError(errno.ELOOP, "Too many levels of symbolic links", "/loop/a"), EXIT_USAGE, ["symbolic links: /loop/a"]),
    (OSError(errno.EIO, "Input/output error", "/dev/sdz"), EXIT_ERROR, ["/dev/sdz: input/output error"]),
])
def test_os_errors_are_one_line_with_the_path(exc, code, words):
    res = CliRunner().invoke(app_raising(exc), ["run"])
    assert res.exit_code == code
    line = error_lines(res)[0]
    for w in words:
        assert w in line, line
    assert len(line) < 400


def test_decode_errors_name_the_file():
    try:
        with reading("/data/flags.txt"):
            b"cat\n\xe9t\xe9\n".decode("utf-8")
    except UnicodeDecodeError as exc:
        caught = exc
    res = CliRunner().invoke(app_raising(caught), ["run"])
    assert res.exit_code == EXIT_USAGE
    assert error_lines(res)[0] == "Error: /data/flags.txt is not UTF-8 text (byte 0xe9 at offset 4)"
    res = CliRunner().invoke(app_raising(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")), ["run"])
    assert res.exit_code == EXIT_USAGE and "not UTF-8 text" in error_lines(res)[0]


def test_a_real_bug_still_says_unexpected_and_debug_keeps_the_traceback(monkeypatch):
    res = CliRunner().invoke(app_raising(ZeroDivisionError("boom")), ["run"])
    assert res.exit_code == EXIT_ERROR and "unexpected ZeroDivisionError: boom" in res.stderr
    monkeypatch.setenv("IMGFEAT_DEBUG", "1")
    res = CliRunner().invoke(app_raising(PermissionError(errno.EACCES, "Permission denied", "/x")), ["run"])
    assert "Traceback" in res.stderr and "Error: permission denied: /x" in res.stderr


@pytest.mark.parametrize("args,words", [
    (["embed", "--batch-size", "abc"], ["'--batch-size'", "integer"]),
    (["embed", "--nope"], ["no such option: --nope"]),
    (["download", "model"], ["missing argument"]),
    (["bogus"], ["no such command 'bogus'"]),
    (["check", "--dataset"], ["--dataset"]),
    (["split", "--train", "half"], ["'--train'"]),
    (["eval", "--k", "x"], ["'--k'"]),
])
def test_typer_usage_errors_use_the_same_one_line_format(invoke, args, words):
    res = invoke(*args)
    assert res.exit_code == EXIT_USAGE
    error, hint = error_lines(res)
    for w in words:
        assert w in error, error
    assert hint.startswith("Hint: see 'imgfeat") and hint.endswith("--help'")


def test_ctrl_c_while_parsing_is_one_line():
    def interrupt(value: str) -> str:
        raise KeyboardInterrupt

    app = typer.Typer(cls=ImgfeatGroup)

    @app.command()
    def run(name: str = typer.Option("x", callback=interrupt)) -> None:
        pass

    @app.command()
    def other() -> None:
        pass

    res = CliRunner().invoke(app, ["run", "--name", "y"])
    assert res.exit_code == EXIT_INTERRUPTED and error_lines(res) == ["Error: interrupted (Ctrl-C)"]


def test_ctrl_c_in_a_command_is_one_line(invoke, monkeypatch, tmp_path):
    import imgfeat_cli.datasets.check as engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run_check", interrupted)
    (tmp_path / "train.txt").write_text("")
    res = invoke("check", "--dataset", tmp_path, "--output", tmp_path / "o")
    assert res.exit_code == EXIT_INTERRUPTED and error_lines(res) == ["Error: interrupted (Ctrl-C)"]


#: Runs the console script's ``main`` with an import hook that raises KeyboardInterrupt when the
#: given module is first imported: Ctrl-C at that moment of start-up, deterministically.
CTRL_C_AT_IMPORT = """
import sys
AT = sys.argv[1]
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name == AT:
            raise KeyboardInterrupt
        return None
sys.meta_path.insert(0, Hook())
sys.argv = ["imgfeat"] + sys.argv[2:]
from imgfeat_cli.cli.entry import main
main()
"""


@pytest.mark.parametrize("module,args", [
    ("rich.console", ["--help"]),
    ("imgfeat_cli.cli.check", ["--version"]),
    ("imgfeat_cli.cli.download", ["download", "list"]),
])
def test_ctrl_c_during_start_up_is_one_line(module, args):
    proc = subprocess.run([sys.executable, "-c", CTRL_C_AT_IMPORT, module, *args], capture_output=True, text=True,
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr
    assert proc.stderr == "Error: interrupted (Ctrl-C)\n" and proc.stdout == ""


@pytest.mark.parametrize("module,args", [
    ("rich.console", ["--help"]),
    ("imgfeat_cli.cli.check", ["--version"]),
])
def test_ctrl_c_that_crossed_generated_code_still_exits_130(module, args, tmp_path):
    """A Ctrl-C that lands in code run from a string (``dataclasses`` and ``namedtuple`` generate
    their methods so while modules import) makes CPython mark the interrupt unhandled even though
    imgfeat catches it; run as ``python -m`` the process then died by SIGINT (-2), not exit 130.
    (Run as a script or with -c, the interpreter exits before it looks at the mark.)"""
    # errors (with its dataclasses) is imported first: a later string exec would clear the mark
    (tmp_path / "ctrl_c_probe.py").write_text("import imgfeat_cli.common.errors\n" + CTRL_C_AT_IMPORT.replace(
        "raise KeyboardInterrupt", 'exec("raise KeyboardInterrupt")'))
    proc = subprocess.run([sys.executable, "-m", "ctrl_c_probe", module, *args], capture_output=True, text=True,
                          cwd=str(REPO), env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"},
                          timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED, (proc.returncode, proc.stderr)
    assert proc.stderr == "Error: interrupted (Ctrl-C)\n" and proc.stdout == ""


@pytest.mark.parametrize("sub", ["", "nested/deeper"])
def test_imgfeat_home_that_is_a_file(invoke, tmp_path, monkeypatch, sub):
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("IMGFEAT_HOME", str(home / sub) if sub else str(home))
    monkeypatch.setenv("IMGFEAT_BASE_URL", "http://127.0.0.1:9/")
    for args in (["download", "url", "http://127.0.0.1:9/x.bin"], ["download", "dataset", "Inshop_examples"],
                 ["download", "model", "PP-ShiTuV2_rec"]):
        res = invoke(*args)
        error, hint = error_lines(res)
        assert res.exit_code == EXIT_USAGE, res.stderr
        assert error.startswith(f"Error: IMGFEAT_HOME={home / sub if sub else home} is not a writable folder")
        assert "IMGFEAT_HOME" in hint


def test_imgfeat_home_that_cannot_be_written(invoke, tmp_path, monkeypatch):
    monkeypatch.setenv("IMGFEAT_HOME", str(unwritable_folder(tmp_path) / "imgfeat-cache"))
    res = invoke("download", "url", "http://127.0.0.1:9/x.bin")
    assert res.exit_code == EXIT_USAGE and "is not a writable folder" in error_lines(res)[0]


def json_cases(tmp: Path, url: str) -> list:
    """One failing command line per command (and per kind of failure: Typer's own parsing, a
    missing input, an unknown model, an HTTP 404), each run with --json."""
    absent = str(tmp / "absent")
    photo = tmp / "p.jpg"
    photo.write_bytes(b"\xff\xd8 not really a jpeg")
    return [
        (["check", "--dataset", absent], EXIT_USAGE, "usage"),
        (["check", "--bogus"], EXIT_USAGE, "usage"),
        (["convert", "--dataset", absent], EXIT_USAGE, "usage"),
        (["split", "--dataset", absent], EXIT_USAGE, "usage"),
        (["train", "--dataset", absent, "-o", "Train.epochs_iters=x"], EXIT_USAGE, "config"),
        (["eval", "--query", absent, "--gallery", absent], EXIT_USAGE, "usage"),
        (["eval", "--k", "x"], EXIT_USAGE, "usage"),
        (["embed", str(photo), "--out", str(tmp / "f.jsonl"), "--model-dir", absent], EXIT_USAGE, "model"),
        (["embed", str(photo), "--out", str(tmp / "f.jsonl"), "--model", "NoSuchModel"], EXIT_USAGE,
         "unknown_model"),
        (["embed", "--batch-size", "abc"], EXIT_USAGE, "usage"),
        (["export", "--weights", absent, "--out", str(tmp / "exp")], EXIT_USAGE, None),
        (["quantize", absent, "--calib", str(tmp), "--out", str(tmp / "q8")], EXIT_USAGE, None),
        (["download", "model", "NoSuchModel"], EXIT_USAGE, "unknown_model"),
        (["download", "dataset", "NoSuchDataset"], EXIT_USAGE, None),
        (["download", "url", "ftp://example.com/x"], EXIT_USAGE, "usage"),
        (["download", "url", url, "--out", str(tmp / "dl.bin")], EXIT_ERROR, "download"),
        (["index", "build", "-g", absent, "--out", str(tmp / "idx"), "--model-dir", absent], EXIT_USAGE, None),
        (["index", "add", "--index", absent, "-g", absent], EXIT_USAGE, None),
        (["index", "remove", "--index", absent, "--ids", "1"], EXIT_USAGE, None),
        (["index", "info", absent], EXIT_USAGE, None),
        (["search", str(photo), "--index", absent], EXIT_USAGE, None),
    ]


def test_every_command_prints_one_json_error_document(invoke, tmp_path, monkeypatch):
    """Under --json, stdout is exactly one JSON document, errors included: the same
    {"error": {code, message, hint, exit_code}} for every command and every kind of failure,
    while stderr keeps the Error:/Hint: lines."""
    from httpserver import Server

    monkeypatch.setenv("IMGFEAT_OFFLINE", "1")
    server = Server()
    try:
        for args, code, kind in json_cases(tmp_path, server.url + "/missing.bin"):
            res = invoke(*args, "--json")
            assert res.exit_code == code, (args, res.exit_code, res.stderr)
            doc = json.loads(res.stdout)  # one document, nothing else
            assert list(doc) == ["error"] and list(doc["error"]) == ["code", "message", "hint", "exit_code"], doc
            err = doc["error"]
            assert err["exit_code"] == code and (kind is None or err["code"] == kind), (args, err)
            assert error_lines(res)[0] == f"Error: {err['message']}", (args, res.stderr)
    finally:
        server.close()


def test_a_document_already_printed_is_the_only_one(invoke, tmp_path):
    """A command that printed its result and then fails (check: exit 3) adds no second document."""
    from imgfeat_cli.datasets.synthetic import make_dataset

    make_dataset(tmp_path / "ds", num_classes=2, per_class=3, size=16, seed=0)
    (tmp_path / "ds" / "train.txt").write_text("images/missing.jpg 0\n")
    res = invoke("check", "--dataset", tmp_path / "ds", "--output", tmp_path / "o", "--json")
    assert res.exit_code == 3
    assert json.loads(res.stdout)["check_pass"] is False


def test_ctrl_c_during_start_up_under_json_prints_the_error_document():
    proc = subprocess.run([sys.executable, "-c", CTRL_C_AT_IMPORT, "imgfeat_cli.cli.download", "download", "list",
                           "--json"], capture_output=True, text=True, cwd=str(REPO),
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED
    assert json.loads(proc.stdout) == {"error": {"code": "interrupted", "message": "interrupted (Ctrl-C)",
                                                 "hint": None, "exit_code": EXIT_INTERRUPTED}}
