"""The options of ``--report DIR`` that ``eval``, ``search`` and ``check`` share."""
from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from imgfeat_cli.cli.helpdoc import OUTPUT
from imgfeat_cli.reports.limits import MAX_QUERY_ROWS

ReportOpt = Annotated[Optional[str], typer.Option(
    "--report", metavar="DIR", rich_help_panel=OUTPUT, show_default=False,
    help="Also write an HTML report: DIR/index.html with thumbnails in DIR/files/ (opens offline).")]
ReportRowsOpt = Annotated[int, typer.Option(
    "--report-rows", metavar="N", rich_help_panel=OUTPUT,
    help=f"Query rows the report shows, each with its top matches (at most {MAX_QUERY_ROWS}).")]
ReportOverwriteOpt = Annotated[bool, typer.Option(
    "--overwrite", rich_help_panel=OUTPUT,
    help="Let --report write into a folder that holds other files (they are kept; one named like a report "
         "file is kept as NAME.bak).")]
ImageRootOpt = Annotated[Optional[str], typer.Option(
    "--image-root", metavar="DIR", rich_help_panel=OUTPUT,
    show_default="the working folder; eval --dataset: the dataset folder",
    help="Folder that relative image paths recorded in embedding files or an index start from (report thumbnails).")]
