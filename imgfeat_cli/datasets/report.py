"""Pictures for ``check``: demo images with their label drawn, and the dataset histogram.

Kept apart from the check logic so that validation alone (``write_outputs=False``) never imports
matplotlib.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from PIL import Image, ImageDraw

from imgfeat_cli.common import fsutil
from imgfeat_cli.imaging.decode import decode_image

#: Bars in the images-per-class distribution: one per count up to this, then equal-width ranges
#: (one bar per count for classes of 6,000 images took 25 s to draw, for a picture of slivers).
MAX_BARS = 60


def draw_labelled(src: Path, label: int, dest: Path, max_side: int = 320) -> None:
    """Save a thumbnail of ``src`` with ``label`` drawn on a contrasting box (upstream draws it too)."""
    img = Image.fromarray(decode_image(src))
    img.thumbnail((max_side, max_side))
    draw = ImageDraw.Draw(img)
    text = str(label)
    box = draw.textbbox((4, 4), text)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 0))
    with fsutil.atomic_open(dest, "wb") as fh:
        img.save(fh, format="JPEG", quality=90)


def draw_histogram(class_stats: Dict[str, Dict[str, Any]], per_class: Dict[str, Dict[str, int]],
                   dest: Path) -> None:
    """Left: images and classes per split (upstream's grouped bars). Right: images-per-class
    distribution per split, which is what reveals imbalance and single-image classes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(class_stats)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = range(len(splits))
    imgs = [class_stats[s].get("images", 0) for s in splits]
    clss = [class_stats[s].get("classes", 0) for s in splits]
    b1 = ax1.bar([x - 0.2 for x in xs], imgs, width=0.4, label="images", color="#4C72B0")
    b2 = ax1.bar([x + 0.2 for x in xs], clss, width=0.4, label="classes", color="#DD8452")
    ax1.bar_label(b1, fontsize=8)
    ax1.bar_label(b2, fontsize=8)
    ax1.set_xticks(list(xs), splits)
    ax1.set_title("Images and classes per split")
    ax1.legend()
    colors = {"train": "#4C72B0", "gallery": "#55A868", "query": "#C44E52"}
    for s in splits:
        counts = list(per_class.get(s, {}).values())
        if counts:
            top = max(counts)
            bins: Any = range(1, top + 2) if top <= MAX_BARS else MAX_BARS
            ax2.hist(counts, bins=bins, alpha=0.55, label=s, color=colors.get(s), align="left" if top <= MAX_BARS
                     else "mid")
    ax2.set_xlabel("images per class")
    ax2.set_ylabel("number of classes")
    ax2.set_title("Distribution of images per class")
    if any(per_class.values()):
        ax2.legend()
    fig.tight_layout()
    with fsutil.atomic_open(dest, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
