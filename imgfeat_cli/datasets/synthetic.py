"""Synthetic ShiTuRecDatasets for the examples, tests and benchmarks.

Each class is a distinct (shape, colour) pair drawn with random position, size, rotation,
background and noise, so a model can learn the classes from a few dozen images and retrieval
metrics move clearly with training. Deterministic for a given seed.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import List, Tuple

from PIL import Image, ImageDraw, ImageFilter

from imgfeat_cli.datasets.dataset import Entry, allocate, write_lists

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")
COLOURS = [(220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 200, 30), (200, 60, 200), (30, 200, 210),
           (240, 130, 20), (120, 120, 120)]


def _draw(shape: str, colour: Tuple[int, int, int], size: int, rng: random.Random) -> Image.Image:
    bg = tuple(rng.randint(200, 255) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)  # type: ignore[arg-type]
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.34) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    col = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        d.ellipse(box, fill=col)
    elif shape == "square":
        d.rectangle(box, fill=col)
    elif shape == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
    elif shape == "cross":
        w = r / 3
        d.rectangle((cx - r, cy - w, cx + r, cy + w), fill=col)
        d.rectangle((cx - w, cy - r, cx + w, cy + r), fill=col)
    elif shape == "ring":
        d.ellipse(box, outline=col, width=max(2, int(r / 3)))
    else:
        d.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=col)
    img = img.rotate(rng.uniform(-30, 30), fillcolor=bg)  # type: ignore[arg-type]
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def make_dataset(root: Path, num_classes: int = 8, per_class: int = 10, size: int = 64, seed: int = 0,
                 percents: Tuple[float, float, float] = (50, 30, 20), distinct_colours: bool = False) -> List[Entry]:
    """Write ``root/images/cNN/*.jpg`` and the three list files; return all entries.

    With ``distinct_colours`` the first 8 classes differ in colour as well as shape, an easier task
    that a randomly initialised network learns in a few dozen steps (the training tests use it)."""
    rng = random.Random(seed)
    pairs = [(s, c) for c in range(len(COLOURS)) for s in SHAPES]
    rng.shuffle(pairs)
    if distinct_colours:
        firsts = [next(p for p in pairs if p[1] == c) for c in range(len(COLOURS))]
        rng.shuffle(firsts)
        pairs = firsts + [p for p in pairs if p not in firsts]
    if num_classes > len(pairs):
        raise ValueError(f"at most {len(pairs)} synthetic classes")
    entries: List[Entry] = []
    for label in range(num_classes):
        shape, colour = pairs[label]
        folder = root / "images" / f"c{label:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rel = f"images/c{label:02d}/{i:03d}.jpg"
            _draw(shape, COLOURS[colour], size, rng).save(root / rel, quality=92)
            entries.append(Entry(rel, label))
    parts = allocate(entries, [e.label for e in entries], percents, seed)
    write_lists(root, {split: sorted(part, key=lambda e: e.path) for split, part in zip(("train", "gallery", "query"), parts)},
                keep_backup=False)
    return entries
