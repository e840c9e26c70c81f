"""Renderings more than one command prints (command modules import this, never each other)."""
from __future__ import annotations

from rich.table import Table


def counts_table(title: str, counts: dict) -> Table:
    """Images per split (``split``, ``convert``)."""
    table = Table(title=title)
    table.add_column("split")
    table.add_column("images", justify="right")
    for k, v in counts.items():
        table.add_row(k, str(v))
    return table
