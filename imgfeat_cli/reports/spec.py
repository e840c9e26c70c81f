"""What a caller asks of an HTML report (``--report DIR`` of eval and search): plain data, so the
library entry points (:mod:`imgfeat_cli.api`) take it and the command line only fills it in."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from imgfeat_cli.reports.limits import DEFAULT_QUERY_ROWS


@dataclass(frozen=True)
class ReportSpec:
    folder: str  # where index.html and its files/ go
    overwrite: bool = False  # may write into a folder holding other files (they are kept)
    rows: int = DEFAULT_QUERY_ROWS  # query rows shown, each with its top matches
    image_root: Optional[str] = None  # where relative image paths start (thumbnails)
