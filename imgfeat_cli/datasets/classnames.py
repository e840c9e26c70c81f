"""A dataset's class names: ``label.txt`` beside the list files, one name a line, the class id its
0-based line number (PaddleX's layout; what ``convert`` writes). An index built from the dataset
answers with these names instead of bare ids (``"Sprite"``, not ``"24"``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

from imgfeat_cli.common import paths

NAMES_FILE = "label.txt"
MAX_BYTES = 16 * 2 ** 20  # far above any real class list; a larger "label.txt" is not one


def class_names(root: Path) -> Optional[List[str]]:
    """The names, or None when ``label.txt`` is absent, unreadable or not a list of distinct names."""
    path = Path(root) / NAMES_FILE
    if paths.not_a_file(path) is not None:
        return None
    try:
        if path.stat().st_size > MAX_BYTES:
            return None
        names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError):
        return None
    while names and not names[-1]:
        names.pop()
    if not names or not all(names) or len(set(names)) != len(names):
        return None
    return names


def named_labels(labels: Sequence[object], names: Optional[List[str]]) -> List[str]:
    """Each integer label as its class name when ``names`` covers every label; else the labels as
    they are (a label.txt that does not fit the lists is not guessed at)."""
    as_text = [str(v) for v in labels]
    if not names or not all(t.isascii() and t.isdigit() and int(t) < len(names) for t in as_text):
        return as_text
    return [names[int(t)] for t in as_text]
