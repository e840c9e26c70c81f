"""``imgfeat download``: official models, demo datasets and arbitrary URLs, into the cache."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table
from typing_extensions import Annotated

from imgfeat_cli.cli.common import ConfigOpt, JsonOpt, Output, QuietOpt, handle_errors
from imgfeat_cli.cli.helpdoc import ImgfeatCommand, ImgfeatSubGroup, examples, override_opt, shown_default

MODEL_EXAMPLES = ("imgfeat download model PP-ShiTuV2_rec",
                  "imgfeat download model PP-ShiTuV2_rec --kind pretrained --json")
DATASET_EXAMPLES = ("imgfeat download dataset Inshop_examples",)
URL_EXAMPLES = ("imgfeat download url https://example.com/photos.tar --out photos.tar",
                "imgfeat download url https://example.com/x.bin --timeout 10 --deadline 600")
LIST_EXAMPLES = ("imgfeat download list", "imgfeat download list --json")

TagOpt = Annotated[str, typer.Option("--tag", metavar="TAG",
                                     help="Official weight tag (paddle3.0.0, paddle3.0rc0, ...).")]
RefreshOpt = Annotated[bool, typer.Option("--refresh", help="Download again, replacing the cached copy and its "
                                                         "recorded checksum (after the server's file changed).")]


def _show(out: Output, path: Path, **details: Any) -> None:
    out.emit({"path": str(path), **details}, str(path), essential=str(path))


def model(name: Annotated[str, typer.Argument(metavar="NAME", help="Model name (see `imgfeat download list`).")],
          kind: Annotated[str, typer.Option("--kind", metavar="KIND",
                                            help="inference, pretrained or backbone.")] = "inference",
          tag: TagOpt = "paddle3.0.0", refresh: RefreshOpt = False, json_: JsonOpt = False,
          quiet: QuietOpt = False) -> None:
    """Fetch an official model: the unpacked inference folder or a .pdparams file."""
    from imgfeat_cli.models.hub import KINDS, ensure_model_file
    from imgfeat_cli.common.errors import UsageError
    from imgfeat_cli.models.registry import get_spec

    out = Output(json_, quiet)
    if kind not in KINDS:
        raise UsageError(f"unknown --kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    spec = get_spec(name)
    with out.progress("bytes") as progress:
        path = ensure_model_file(spec, kind, tag, progress, out.warn, refresh)
    _show(out, path, model=name, kind=kind, tag=tag)


def dataset(name: Annotated[str, typer.Argument(metavar="NAME", help="Inshop_examples or image_classification_labelme_examples.")],
            refresh: RefreshOpt = False, json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Fetch and unpack a PaddleX demo dataset."""
    from imgfeat_cli.common.cache import ensure_dataset

    out = Output(json_, quiet)
    with out.progress("bytes") as progress:
        path = ensure_dataset(name, progress, out.warn, refresh)
    _show(out, path, dataset=name)


def url(address: Annotated[str, typer.Argument(metavar="URL", help="http(s) URL.")],
        sha256: Annotated[Optional[str], typer.Option("--sha256", metavar="HEX", help="Expected checksum (hex).",
                                                      show_default=False)] = None,
        dest: Annotated[Optional[str], typer.Option("--out", "-O", metavar="FILE", help="Target file.",
                                                    show_default="the cache's files/NAME")] = None,
        timeout: Annotated[Optional[float], typer.Option(
            "--timeout", metavar="SECONDS", help="Wait this long for the server to connect or send more, per attempt.",
            show_default=shown_default("Download.timeout"))] = None,
        deadline: Annotated[Optional[float], typer.Option(
            "--deadline", metavar="SECONDS", help="Give up after this long in all, retries included (what was "
            "fetched is kept for a resume).", show_default=shown_default("Download.deadline", "no limit"))] = None,
        refresh: RefreshOpt = False, config: ConfigOpt = None, override: override_opt("Download.retries=2") = None,
        json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Fetch any file: resumable, retried, verified; an existing --out is replaced only by a
    complete, verified download."""
    import re

    from imgfeat_cli.common import config as cfgmod
    from imgfeat_cli.common.cache import fetch, url_file
    from imgfeat_cli.common.errors import UsageError, clip

    out = Output(json_, quiet)
    dl = cfgmod.resolve("download", config, override or [], {"Download.timeout": timeout, "Download.deadline": deadline},
                        note=out.note)["Download"]
    if not address.startswith(("http://", "https://")):
        raise UsageError(f"{clip(repr(address))} is not an http(s) URL")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise UsageError(f"--sha256 {clip(repr(sha256))} is not 64 hex digits")
    target = Path(dest) if dest else url_file(address)
    if target.is_dir():
        raise UsageError(f"--out {clip(target)} is a folder", hint=f"give a file path, e.g. {target / url_file(address).name}")
    with out.progress("bytes") as progress:
        path = fetch(address, target, sha256, progress, retries=dl["retries"], timeout=dl["timeout"], log=out.warn,
                     refresh=refresh, deadline=dl["deadline"])
    _show(out, path, url=address)


def list_(tag: TagOpt = "paddle3.0.0", json_: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """What imgfeat can download, and what is cached (size, path)."""
    from imgfeat_cli.common.cache import cache_root, dataset_entries
    from imgfeat_cli.models.hub import list_cached_models

    out = Output(json_, quiet)
    entries = list_cached_models(tag) + dataset_entries()
    table = Table(title=f"imgfeat downloads (cache: {cache_root()})")
    for col in ("kind", "name", "cached", "size", "path"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for e in entries:
        table.add_row(e.kind, e.name, "yes" if e.cached else "no",
                      f"{e.size / 1e6:.1f} MB" if e.cached else "", e.path if e.cached else "")
    out.emit([e.__dict__ for e in entries], table)


def register(app: typer.Typer) -> None:
    dl = typer.Typer(cls=ImgfeatSubGroup, help="Download official models, demo datasets or any URL into the cache "
                     "($IMGFEAT_HOME, default ~/.cache/imgfeat).", no_args_is_help=True,
                     epilog=examples(*MODEL_EXAMPLES, *DATASET_EXAMPLES, *URL_EXAMPLES, *LIST_EXAMPLES),
                     context_settings={"help_option_names": ["-h", "--help"]})
    for name, fn, lines in (("model", model, MODEL_EXAMPLES), ("dataset", dataset, DATASET_EXAMPLES),
                            ("url", url, URL_EXAMPLES), ("list", list_, LIST_EXAMPLES)):
        dl.command(name, cls=ImgfeatCommand, epilog=examples(*lines))(handle_errors(fn))
    app.add_typer(dl, name="download")
