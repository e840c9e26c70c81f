"""Throughput of `imgfeat embed` against the model-only bound, measured in the same run.

    python benchmarks/embed.py [--images DIR] [--model-dir DIR] [--batch-size 16] [--limit 320] [--repeats 3]

Model-only: forward passes over pre-decoded, pre-processed batches (no I/O, no decoding) — the
ceiling for end-to-end speed. End-to-end: the `embed` engine on the same files (decode, resize,
normalise, infer, write JSONL). Runs alternate so machine noise hits both; medians are reported.
Without --model-dir a PP-ShiTuV2_rec with seeded random weights is exported (same compute as
the official model). Without --images the drink gallery from ../shared is used when present,
else a synthetic folder of 640x480 JPEGs.
"""
from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from imgfeat_cli import embed as run_embed
from imgfeat_cli.pipeline import batch as pipeline_batch
from imgfeat_cli.pipeline.inputs import InputItem, walk_images
from imgfeat_cli.pipeline.predictor import create_model


def scratch_dir(prefix: str) -> Path:
    """A temporary folder for one benchmark run, removed when the process exits (also on an error)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, tmp, True)
    return tmp


def default_images(tmp: Path) -> list:
    drink = Path(__file__).resolve().parents[2] / "shared" / "data" / "drink_dataset_v1.0" / "gallery"
    if drink.is_dir():
        return walk_images(drink)
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(160):
        p = tmp / f"img{i:04d}.jpg"
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(p, quality=90)
        out.append(str(p))
    return out


def default_model_dir(tmp: Path) -> str:
    """A PP-ShiTuV2_rec with seeded random weights shaped like a trained model's, exported: the
    official model's compute and input-dependent features, offline."""
    from imgfeat_cli.models.export import export_seeded

    model_dir = str(tmp / "model")
    export_seeded("PP-ShiTuV2_rec", model_dir, seed=0)
    return model_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images")
    ap.add_argument("--model-dir")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--limit", type=int, default=320)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    tmp = scratch_dir("imgfeat-bench-")
    model_dir = args.model_dir or default_model_dir(tmp)
    images = walk_images(Path(args.images)) if args.images else default_images(tmp)
    images = images[: args.limit]
    model = create_model(model_dir=model_dir)
    arrays = [pipeline_batch.preprocess(model, InputItem(p, p)) for p in images]
    bs = args.batch_size
    batches = [np.stack(arrays[i:i + bs]) for i in range(0, len(arrays), bs)]
    model.runner(batches[0])  # warm-up (oneDNN primitive creation)
    bound, e2e = [], []
    for r in range(args.repeats):
        t = time.perf_counter()
        for b in batches:
            model.runner(b)
        bound.append(len(arrays) / (time.perf_counter() - t))
        res = run_embed(images, str(tmp / f"out{r}.jsonl"), model, batch_size=bs, workers=args.workers)
        e2e.append(res.images_per_s)
    mb, me = statistics.median(bound), statistics.median(e2e)
    print(f"images: {len(images)}  batch: {bs}  backend: {model.backend}  threads: default")
    print(f"model-only bound : {mb:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in bound)})")
    print(f"embed end-to-end : {me:8.1f} images/s  (runs: {', '.join(f'{v:.1f}' for v in e2e)})")
    print(f"ratio            : {me / mb:8.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
