"""What a dataset makes of a run, decided before anything is built or written: its lists checked
(every image present, readable and not empty), whether it can be evaluated, the labels made
contiguous, the batch size and the PK batches of an epoch."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from imgfeat_cli.common.errors import DatasetError, UsageError
from imgfeat_cli.datasets.dataset import MAX_CLASSES
from imgfeat_cli.training.data import load_split
from imgfeat_cli.training.options import TrainOptions
from imgfeat_cli.training.sampler import PKSampler

Log = Callable[[str], None]

#: The default batch size on CPU (the recipe's 128 is for GPUs). Measured on 2 cores
#: (docs/training.md, "Batch size"): per image, batch 32 trained 1.5x faster than 128 and needs a
#: quarter of its memory (about 2.4 GB at 224 px instead of 7.7); below 32 the per-step fixed costs
#: start to show and PK batches hold fewer classes.
CPU_BATCH = 32
K = 4  # images per class in a PK batch (the recipe's sample_per_id)


@dataclass
class DatasetPlan:
    entries: List[Any]  # train.txt's entries (original labels, for messages)
    labels: List[int]  # the training labels, contiguous 0..num_classes-1 (PaddleClas's relabel)
    can_eval: bool  # gallery.txt and query.txt list images
    num_classes: int
    batch_size: int
    batch_chosen: bool  # set by the user, not defaulted
    sampler: PKSampler
    steps: int  # per epoch, for this rank


def eval_lists(root: Path) -> bool:
    """Whether the run can evaluate: gallery.txt and query.txt both list images. Both absent trains
    without evaluation; one absent, or one present but empty, is refused (it would score nothing,
    or a recall of 0 that means nothing)."""
    gallery = load_split(root, "gallery", required=False)
    query = load_split(root, "query", required=False)
    present = {name: (root / f"{name}.txt").exists() for name in ("gallery", "query")}
    if not any(present.values()):
        return False
    for name, listed in (("query", query), ("gallery", gallery)):
        if not present[name]:
            raise UsageError(f"{root / (name + '.txt')} does not exist, but "
                             f"{'gallery' if name == 'query' else 'query'}.txt does: nothing could be evaluated",
                             hint=f"add {name}.txt (imgfeat split makes both), or remove gallery.txt and query.txt "
                                  "to train without evaluation")
        if not listed:
            raise UsageError(f"{root / (name + '.txt')} lists no images: evaluation would score nothing",
                             hint=f"put images in {name}.txt (imgfeat split makes one), or remove gallery.txt and "
                                  "query.txt to train without evaluation")
    if not {e.label for e in query} & {e.label for e in gallery}:
        raise UsageError(f"no label of {root / 'query.txt'} appears in {root / 'gallery.txt'}: every query would "
                         "go unscored", hint="query and gallery must share labels (see imgfeat check)")
    return True


def relabel(entries: Sequence[Any], num_classes: Optional[int], root: Path) -> List[int]:
    """Training labels made contiguous (sorted original ids -> 0..C-1), as PaddleClas's
    ``relabel: True``: the classifier has one output per class present, whatever the ids.
    ``num_classes``, when given, must have room for every class; refused before the model is built:
    negative labels, and a classifier above :data:`~imgfeat_cli.datasets.dataset.MAX_CLASSES`."""
    bad = next((e for e in entries if e.label < 0), None)
    if bad is not None:
        raise DatasetError(f"{root / 'train.txt'}:{bad.line}: label {bad.label} is negative",
                           hint="labels are class ids 0..N-1")
    ids = sorted({e.label for e in entries})
    if num_classes is not None and num_classes < len(ids):
        raise UsageError(f"Train.num_classes is {num_classes} but {root / 'train.txt'} has {len(ids)} classes",
                         hint=f"set -o Train.num_classes={len(ids)} or leave it unset (read from the dataset)")
    if num_classes is not None and num_classes > MAX_CLASSES:
        raise UsageError(f"Train.num_classes asks for a classifier of {num_classes} classes, above the limit of "
                         f"{MAX_CLASSES}", hint=f"leave Train.num_classes unset ({len(ids)} classes in train.txt)")
    index = {label: i for i, label in enumerate(ids)}
    return [index[e.label] for e in entries]


def choose_batch(opts: TrainOptions, recipe_batch: int, n_images: int, n_classes: int, on_gpu: bool,
                 log: Log) -> int:
    """The user's batch size, else the recipe's (capped at :data:`CPU_BATCH` on CPU), lowered to what
    the dataset holds: at most its image count and ``classes x 4`` (a PK batch's classes are distinct)."""
    if opts.batch_size:
        return int(opts.batch_size)
    bs = recipe_batch if on_gpu else min(recipe_batch, CPU_BATCH)
    cap = max(K, min(n_images, n_classes * K) // K * K)
    if cap < bs:
        log(f"batch size {cap}: {n_images} images in {n_classes} classes fill no batch of {bs} "
            f"(set -o Train.batch_size to choose)")
        return cap
    return bs


def plan_dataset(opts: TrainOptions, recipe_batch: int, on_gpu: bool, world: int, log: Log) -> DatasetPlan:
    root = Path(opts.dataset_dir)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise UsageError(f"dataset folder {root} {what}", hint="pass --dataset DIR (a ShiTuRecDataset)")
    entries = load_split(root, "train")
    if not entries:
        raise DatasetError(f"{root / 'train.txt'} lists no images")
    can_eval = eval_lists(root)
    labels = relabel(entries, opts.num_classes, root)
    classes = len(set(labels))
    bs = choose_batch(opts, recipe_batch, len(entries), classes, on_gpu, log)
    # PaddleClas: each of W ranks gets ceil(N / W) samples, in ceil(that / batch) batches
    steps = math.ceil(math.ceil(len(entries) / world) / bs)
    sampler = PKSampler(labels, bs, k=K, seed=opts.seed, num_batches=steps * world)
    return DatasetPlan(entries, labels, can_eval, opts.num_classes or classes, bs, bool(opts.batch_size), sampler,
                       steps)
