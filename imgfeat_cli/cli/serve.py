"""``imgfeat serve``: the embedding and retrieval service (FastAPI + uvicorn, ``imgfeat[serve]``)."""
from __future__ import annotations

from typing import List, Optional

import typer
from typing_extensions import Annotated

from imgfeat_cli.cli.common import (BackendOpt, ConfigOpt, DeviceOpt, JsonOpt, ModelDirOpt, ModelOpt, Output,
                                     PrecisionOpt, QuietOpt, WeightsOpt, handle_errors)
from imgfeat_cli.cli.helpdoc import INPUT, OUTPUT, PERFORMANCE, ImgfeatCommand, examples, override_opt, shown_default

EXAMPLES = examples("imgfeat serve --index drink_index --model-dir PP-ShiTuV2_rec_infer",
                    "imgfeat serve --index drink_index --host 0.0.0.0 --token-file token --workers 2",
                    "imgfeat serve --index drink_index --allow-url https://images.example.com/ --cors https://shop.example.com")
NETWORK = "Network & security"


def serve(
    indexes: Annotated[Optional[List[str]], typer.Option(
        "--index", "-i", metavar="DIR", rich_help_panel=INPUT, show_default=False,
        help="Index folder to serve under its folder name (repeatable); the first is /shitu-infer's default.")] = None,
    model: ModelOpt = None, model_dir: ModelDirOpt = None, weights: WeightsOpt = None, device: DeviceOpt = None,
    backend: BackendOpt = None, precision: PrecisionOpt = None,
    host: Annotated[Optional[str], typer.Option("--host", metavar="ADDRESS", rich_help_panel=NETWORK,
                                                help="Address to listen on; not loopback: needs --token-file.",
                                                show_default=shown_default("Serve.host"))] = None,
    port: Annotated[Optional[int], typer.Option("--port", "-p", metavar="PORT", rich_help_panel=NETWORK,
                                                help="TCP port (0: a free one).",
                                                show_default=shown_default("Serve.port"))] = None,
    token_file: Annotated[Optional[str], typer.Option(
        "--token-file", metavar="FILE", rich_help_panel=NETWORK, show_default=False,
        help="Bearer token clients must send (Authorization: Bearer TOKEN).")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", rich_help_panel=NETWORK,
                                          help="Allow a non-loopback --host without a token (warns).")] = False,
    allow_url: Annotated[Optional[List[str]], typer.Option(
        "--allow-url", metavar="PREFIX", rich_help_panel=NETWORK, show_default="none: URL inputs are refused",
        help="Fetch image URLs starting with this http(s) prefix (repeatable).")] = None,
    cors: Annotated[Optional[List[str]], typer.Option(
        "--cors", metavar="ORIGIN", rich_help_panel=NETWORK, show_default="none: CORS off",
        help="Allow browser pages from this origin to call the API (repeatable).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(
        "--data-dir", metavar="DIR", rich_help_panel=OUTPUT, show_default=shown_default("Serve.data_dir"),
        help="Where indexes built over HTTP (/shitu-index-build) live, one folder per key.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", metavar="N", rich_help_panel=PERFORMANCE,
                                                   help="Server processes, each with its own model.",
                                                   show_default=shown_default("Serve.workers"))] = None,
    max_batch: Annotated[Optional[int], typer.Option(
        "--max-batch", metavar="N", rich_help_panel=PERFORMANCE, help="Images per forward pass at most.",
        show_default=shown_default("Serve.max_batch", "the device's default batch size"))] = None,
    max_wait_ms: Annotated[Optional[float], typer.Option(
        "--max-wait-ms", metavar="MS", rich_help_panel=PERFORMANCE, show_default=shown_default("Serve.max_wait_ms"),
        help="Longest wait for other requests to share a forward pass.")] = None,
    allow_other_model: Annotated[bool, typer.Option(
        "--allow-other-model", rich_help_panel=INPUT,
        help="Serve indexes built with another model (warns).")] = False,
    config: ConfigOpt = None, override: override_opt("Serve.queue_size=512") = None, json_: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Serve embeddings, searches and index updates over HTTP.

    imgfeat's API under /v1, PaddleX's PP-ShiTuV2 serving API (/shitu-index-build, /shitu-index-add,
    /shitu-index-remove, /shitu-infer), a search page at /, API docs at /docs, and /healthz, /readyz,
    /metrics. Prints the URL once it listens; SIGTERM answers the requests in flight, then exits 0."""
    from imgfeat_cli import serve as service
    from imgfeat_cli.common import config as cfgmod

    out = Output(json_, quiet)
    explicit: set = set()
    cfg = cfgmod.resolve("serve", config, override or [], {
        "Global.model": model, "Global.device": device, "Predict.model_dir": model_dir, "Predict.weights": weights,
        "Predict.backend": backend, "Predict.precision": precision, "Serve.host": host, "Serve.port": port,
        "Serve.token_file": token_file, "Serve.no_auth": no_auth or None, "Serve.allow_url": allow_url or None,
        "Serve.cors": cors or None, "Serve.data_dir": data_dir, "Serve.workers": workers,
        "Serve.max_batch": max_batch, "Serve.max_wait_ms": max_wait_ms,
        "Serve.allow_other_model": allow_other_model or None}, note=out.note, explicit=explicit)
    service.run(cfg, indexes or [], log_line=out.log, warn=out.warn, quiet=out.quiet, explicit=explicit,
                ready=lambda doc: out.emit(doc, f"listening on {doc['url']}", essential=doc["url"]))


def register(app: typer.Typer) -> None:
    app.command("serve", cls=ImgfeatCommand, epilog=EXAMPLES)(handle_errors(serve))
