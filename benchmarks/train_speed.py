"""Training speed: imgfeat against PaddleClas's own training loop (the one PaddleX runs), same data
and recipe, in alternating runs.

    python benchmarks/train_speed.py --paddleclas-python /work/pdc-venv/bin/python \\
        --paddleclas-src /work/pdc-src [--baseline-src /work/main] [--batches 32,default] [--epochs 3]
        [--classes 32] [--rounds 3] [--input-size 224] [--weights FILE] [--newcomer] [--json]

Each contender trains as a separate process on the same dataset (built from the drink gallery in
../shared: per class, 4 training images, 1 gallery, 1 query), from the same weights (seeded random
PP-ShiTuV2_rec weights unless ``--weights``), with eval and save on the shipped intervals (every epoch):

* ``imgfeat``: this tree (``python -m imgfeat_cli train``, its defaults but the batch size when given);
* ``imgfeat@baseline`` (with ``--baseline-src``): another checkout of imgfeat, e.g. main, the same way;
* ``PaddleClas`` (with ``--paddleclas-python``/``--paddleclas-src``): ``ppcls.engine.Engine`` in its
  own venv with PaddleX's PP-ShiTuV2_rec config (``uniform_output_enabled``, PaddleX's output
  layout and exports, 4 loader workers), only paths, classes, epochs and batch set. Never imported here.

Per run: steady-state images/s (training time of epochs 2.., without evaluation and saving: for
imgfeat its ``train_result.json`` epoch seconds, for PaddleClas the time inside its
``train_epoch_func``), whole-run wall time (start to exit, everything included), the peak RSS of the
training process, and the peak summed PSS of its process tree (PaddleClas's loader workers are
processes). Contenders rotate their order every round so machine noise hits each; medians over
``--rounds`` are printed with ratios to PaddleClas (and to the baseline). ``--newcomer``: the
first-hour case instead (108 images: 36 classes x 3, one each for train, gallery and query;
defaults; 2 epochs).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

DRINK = Path(__file__).resolve().parents[2] / "shared" / "data" / "drink_dataset_v1.0" / "gallery"
PADDLEX_BATCH = 128  # PaddleX's Train.batch_size for PP-ShiTuV2_rec (what "default" means for PaddleClas)

# Runs inside the PaddleClas venv: times each train_epoch_func call (training only) and prints it.
PDC_DRIVER = r'''
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ppcls.utils import config as C
from ppcls.engine.engine import Engine
cfg = C.get_config(sys.argv[2], show=False)
cfg.profiler_options = None
if len(sys.argv) > 4:  # initial weights as .npz (a .pdparams pickled by numpy 2 does not load under numpy 1)
    import numpy as np, paddle
    with np.load(sys.argv[4]) as z:
        paddle.save({k: z[k] for k in z.files}, sys.argv[4][:-4] + ".pdparams")
    cfg["Global"]["pretrained_model"] = sys.argv[4][:-4]
engine = Engine(cfg, mode="train")
inner = engine.train_epoch_func
def timed(eng, epoch_id, print_batch_step):
    t = time.perf_counter()
    inner(eng, epoch_id, print_batch_step)
    print("@@EPOCH " + json.dumps({"epoch": epoch_id, "seconds": time.perf_counter() - t,
                                   "images": eng.iter_per_epoch * BATCH}), flush=True)
BATCH = int(sys.argv[3])
engine.train_epoch_func = timed
engine.train()
'''


def build_dataset(out: Path, classes: int, per_class: int = 6) -> Dict[str, int]:
    """``classes`` drink classes with at least ``per_class`` images: ``per_class - 2`` train, 1 gallery,
    1 query each (the rest unused); images copied, lists in imgfeat's format (PaddleClas reads them too)."""
    folders = sorted((d for d in DRINK.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    (out / "images").mkdir(parents=True)
    lists: Dict[str, List[str]] = {"train": [], "gallery": [], "query": []}
    used = 0
    for d in folders:
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if len(files) < per_class:
            continue
        for i, f in enumerate(files[:per_class]):
            name = f"images/{d.name}_{f.name}"
            shutil.copyfile(f, out / name)
            split = "train" if i < per_class - 2 else ("gallery" if i == per_class - 2 else "query")
            lists[split].append(f"{name} {d.name}")
        used += 1
        if used == classes:
            break
    for split, lines in lists.items():
        (out / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return {k: len(v) for k, v in lists.items()}


def paddleclas_config(ds: Path, out: Path, batch: int, epochs: int, classes: int, input_size: int,
                      lr: float, warmup: int, weights: Optional[str]) -> Dict[str, Any]:
    """PaddleX's PP-ShiTuV2_rec training config (its PaddleClas config, as PaddleX fills it in)."""
    size = [input_size, input_size]
    resize = {"ResizeImage": {"size": size, "return_numpy": False, "interpolation": "bilinear", "backend": "cv2"}}
    norm = {"NormalizeImage": {"scale": "1.0/255.0", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                               "order": "hwc"}}
    decode = {"DecodeImage": {"to_rgb": True, "channel_first": False}}

    def evalset(split: str) -> Dict[str, Any]:
        return {"dataset": {"name": "ImageNetDataset", "image_root": str(ds), "cls_label_path": str(ds / f"{split}.txt"),
                            "transform_ops": [decode, resize, norm]},
                "sampler": {"name": "DistributedBatchSampler", "batch_size": 64, "drop_last": False, "shuffle": False},
                "loader": {"num_workers": 4, "use_shared_memory": True}}

    return {
        "Global": {"checkpoints": None, "pretrained_model": weights, "output_dir": str(out), "device": "cpu",
                   "save_interval": 1, "eval_during_train": True, "eval_interval": 1, "epochs": epochs,
                   "print_batch_step": 1, "use_visualdl": False, "eval_mode": "retrieval",
                   "retrieval_feature_from": "features", "re_ranking": False, "use_dali": False,
                   "image_shape": [3, input_size, input_size], "save_inference_dir": str(out / "inference"),
                   "uniform_output_enabled": True},
        "AMP": {"use_amp": False},
        "Arch": {"name": "RecModel", "infer_output_key": "features", "infer_add_softmax": False,
                 "Backbone": {"name": "PPLCNetV2_base_ShiTu", "pretrained": False, "use_ssld": True,
                              "class_expand": 512},
                 "BackboneStopLayer": {"name": "flatten"},
                 "Neck": {"name": "BNNeck", "num_features": 512,
                          "weight_attr": {"initializer": {"name": "Constant", "value": 1.0}},
                          "bias_attr": {"initializer": {"name": "Constant", "value": 0.0}, "learning_rate": 1.0e-20}},
                 "Head": {"name": "FC", "embedding_size": 512, "class_num": classes,
                          "weight_attr": {"initializer": {"name": "Normal", "std": 0.001}}, "bias_attr": False}},
        "Loss": {"Train": [{"CELoss": {"weight": 1.0, "epsilon": 0.1}},
                           {"TripletAngularMarginLoss": {"weight": 1.0, "feature_from": "features", "margin": 0.5,
                                                         "reduction": "mean", "add_absolute": True,
                                                         "absolute_loss_weight": 0.1, "normalize_feature": True,
                                                         "ap_value": 0.8, "an_value": 0.4}}],
                 "Eval": [{"CELoss": {"weight": 1.0}}]},
        "Optimizer": {"name": "Momentum", "momentum": 0.9,
                      "lr": {"name": "Cosine", "learning_rate": lr, "warmup_epoch": warmup},
                      "regularizer": {"name": "L2", "coeff": 1e-5}},
        "DataLoader": {
            "Train": {"dataset": {"name": "ImageNetDataset", "image_root": str(ds),
                                  "cls_label_path": str(ds / "train.txt"), "relabel": True,
                                  "transform_ops": [decode, resize, {"RandFlipImage": {"flip_code": 1}},
                                                    {"Pad": {"padding": 10, "backend": "cv2"}},
                                                    {"RandCropImageV2": {"size": size}},
                                                    {"RandomRotation": {"prob": 0.5, "degrees": 90,
                                                                        "interpolation": "bilinear"}},
                                                    resize, norm]},
                      "sampler": {"name": "PKSampler", "batch_size": batch, "sample_per_id": 4, "drop_last": False,
                                  "shuffle": True},
                      "loader": {"num_workers": 4, "use_shared_memory": True}},
            "Eval": {"Query": evalset("query"), "Gallery": evalset("gallery")}},
        "Metric": {"Eval": [{"Recallk": {"topk": [1, 5]}}, {"mAP": {}}]},
    }


def _pss_tree(root: int) -> int:
    """Summed proportional set size of ``root`` and its descendants (shared pages split fairly)."""
    pids, total = [root], 0
    try:
        for task in Path(f"/proc/{root}/task").iterdir():
            kids = (task / "children").read_text().split()
            pids += [int(k) for k in kids]
    except OSError:
        pass
    for pid in list(pids):
        try:
            for k in (Path(f"/proc/{pid}/task") / str(pid) / "children").read_text().split():
                if int(k) not in pids:
                    pids.append(int(k))
        except OSError:
            pass
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def run(cmd: List[str], env: Dict[str, str], log: Path, cwd: Optional[str] = None) -> Dict[str, Any]:
    """Run one training process; wall time, peak RSS (wait4) and peak PSS of its tree (sampled)."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        peak = [0]

        def sample() -> None:
            while proc.poll() is None:
                peak[0] = max(peak[0], _pss_tree(proc.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}); see {log}:\n" + log.read_text()[-3000:])
    return {"wall_s": wall, "peak_rss": usage.ru_maxrss * 1024, "peak_pss_tree": peak[0],
            "cpu_s": usage.ru_utime + usage.ru_stime}


def steady(epochs: List[Dict[str, float]]) -> float:
    """Images/s over epochs 2.. (epoch 1 warms caches and allocators), training time only."""
    rest = [e for e in epochs if e["epoch"] >= 2] or epochs
    return sum(e["images"] for e in rest) / sum(e["seconds"] for e in rest)


def run_imgfeat(src: str, ds: Path, out: Path, batch: Optional[int], epochs: int, input_size: int,
                weights: str, extra: List[str]) -> Dict[str, Any]:
    args = [sys.executable, "-m", "imgfeat_cli", "train", "--dataset", str(ds), "--output", str(out),
            "--epochs", str(epochs), "--quiet", "-o", f"Train.pretrain_weight_path={weights}",
            "-o", f"Train.input_size={input_size}"] + (["-o", f"Train.batch_size={batch}"] if batch else []) + extra
    env = {**os.environ, "PYTHONPATH": src}
    env.pop("OMP_NUM_THREADS", None)
    # In ``src``: ``python -m`` puts the working folder first on sys.path, ahead of PYTHONPATH, so a
    # baseline run started from another checkout would import that checkout instead.
    res = run(args, env, out.with_suffix(".log"), cwd=src)
    doc = json.loads((out / "train_result.json").read_text())
    bs = doc["run"]["batch_size"]
    res["epochs"] = [{"epoch": h["epoch"], "seconds": h["seconds"], "images": doc["run"]["steps_per_epoch"] * bs}
                     for h in doc["history"]]
    res["batch"], res["recall1"] = bs, (doc.get("models", {}).get("best") or {}).get("score")
    return res


def run_paddleclas(python: str, src: str, ds: Path, out: Path, batch: int, epochs: int, classes: int,
                   input_size: int, weights: Optional[str]) -> Dict[str, Any]:
    import yaml

    out.mkdir(parents=True)
    cfg_path, driver = out / "config.yaml", out / "driver.py"
    cfg_path.write_text(yaml.safe_dump(paddleclas_config(ds, out, batch, epochs, classes, input_size, 0.01, 5,
                                                         None)))
    driver.write_text(PDC_DRIVER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS")}
    log = out.with_suffix(".log")
    res = run([python, str(driver), src, str(cfg_path), str(batch)] + ([weights] if weights else []), env, log)
    res["epochs"] = [json.loads(line.split(" ", 1)[1]) for line in log.read_text().splitlines()
                     if line.startswith("@@EPOCH ")]
    res["batch"] = batch
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paddleclas-python")
    ap.add_argument("--paddleclas-src")
    ap.add_argument("--baseline-src", help="another imgfeat checkout to compare with (e.g. /work/main)")
    ap.add_argument("--batches", default="32,default")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--classes", type=int, default=32, help="drink classes (4 training images each)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--weights", help="initial .pdparams for every contender (default: seeded random weights)")
    ap.add_argument("--per-class", type=int, default=6, help="images per class: the last two go to gallery and query")
    ap.add_argument("--newcomer", action="store_true",
                    help="a first fine-tune: 108 images (36 classes x 3: one each for train, gallery, query), "
                         "defaults, 2 epochs")
    ap.add_argument("--only", default="", help="comma list of contenders to run (imgfeat, baseline, paddleclas)")
    ap.add_argument("--keep", help="keep the runs in this folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not DRINK.is_dir():
        raise SystemExit(f"needs the drink gallery at {DRINK}")
    if args.newcomer:
        args.classes, args.per_class, args.epochs, args.batches = 36, 3, 2, "default"
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="imgfeat-train-speed-"))
    ds = tmp / "dataset"
    if not ds.is_dir():
        counts = build_dataset(ds, args.classes, args.per_class)
    else:
        counts = {s: len((ds / f"{s}.txt").read_text().splitlines()) for s in ("train", "gallery", "query")}
    weights = args.weights or str(_seeded_weights(tmp))
    here = str(Path(__file__).resolve().parents[1])
    only = set(filter(None, args.only.split(",")))
    contenders = [c for c in ("imgfeat", "baseline", "paddleclas")
                  if (not only or c in only) and (c != "baseline" or args.baseline_src)
                  and (c != "paddleclas" or (args.paddleclas_python and args.paddleclas_src))]
    batches = [None if b == "default" else int(b) for b in args.batches.split(",")]
    print(f"dataset: {counts} images ({args.classes} drink classes), input {args.input_size}, {args.epochs} epochs, "
          f"{args.rounds} rounds; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; runs in {tmp}",
          file=sys.stderr)
    results: Dict[str, List[Dict[str, Any]]] = {}
    for r in range(args.rounds):
        for batch in batches:
            order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
            for who in order:
                out = tmp / f"r{r}-{who}-b{batch or 'default'}"
                if who == "paddleclas":
                    res = run_paddleclas(args.paddleclas_python, args.paddleclas_src, ds, out, batch or PADDLEX_BATCH,
                                         args.epochs, args.classes, args.input_size, _paddleclas_weights(weights, tmp))
                else:
                    res = run_imgfeat(here if who == "imgfeat" else args.baseline_src, ds, out, batch, args.epochs,
                                      args.input_size, weights, [])
                res["img_s"] = steady(res["epochs"])
                res["load"] = os.getloadavg()[0]
                results.setdefault(f"{who} b{batch or 'default'}", []).append(res)
                print(f"round {r + 1} {who:10s} batch {res['batch']:4d}: {res['img_s']:.2f} img/s steady, "
                      f"whole run {res['wall_s']:.1f} s (cpu {res['cpu_s']:.1f} s), peak RSS "
                      f"{res['peak_rss'] / 1e9:.2f} GB, tree PSS {res['peak_pss_tree'] / 1e9:.2f} GB, "
                      f"load {res['load']:.1f}", file=sys.stderr, flush=True)
                shutil.rmtree(out, ignore_errors=True)
    report(results, args.json)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


def _seeded_weights(tmp: Path) -> Path:
    """PP-ShiTuV2_rec weights from a seeded random initialisation (the official weights' shapes)."""
    import paddle

    from imgfeat_cli.models.registry import build_model

    path = tmp / "seeded.pdparams"
    if not path.is_file():
        paddle.seed(0)
        paddle.save(build_model("PP-ShiTuV2_rec").state_dict(), str(path))
    return path


def _paddleclas_weights(weights: str, tmp: Path) -> str:
    """The initial weights as .npz for the PaddleClas driver, which saves them as its
    ``Global.pretrained_model`` (imgfeat's parameter names are upstream's)."""
    import numpy as np
    import paddle

    path = tmp / "pdc_init.npz"
    if not path.exists():
        np.savez(path, **{k: np.asarray(v) for k, v in paddle.load(weights).items()})
    return str(path)


def report(results: Dict[str, List[Dict[str, Any]]], as_json: bool) -> None:
    med = {k: {m: statistics.median(r[m] for r in runs) for m in ("img_s", "wall_s", "peak_rss", "peak_pss_tree",
                                                                   "cpu_s")} for k, runs in results.items()}
    if as_json:
        print(json.dumps({"medians": med, "runs": results}, indent=1, default=float))
        return
    print(f"{'contender':22s} {'img/s':>7s} {'whole run s':>11s} {'cpu s':>7s} {'peak RSS GB':>11s} {'tree PSS GB':>11s}")
    for k, m in med.items():
        print(f"{k:22s} {m['img_s']:7.2f} {m['wall_s']:11.1f} {m['cpu_s']:7.1f} {m['peak_rss'] / 1e9:11.2f} "
              f"{m['peak_pss_tree'] / 1e9:11.2f}")
    for batch in {k.split(" ", 1)[1] for k in med}:
        ours = med.get(f"imgfeat {batch}")
        for other in ("paddleclas", "baseline"):
            theirs = med.get(f"{other} {batch}")
            if ours and theirs:
                print(f"imgfeat / {other} at {batch}: img/s x{ours['img_s'] / theirs['img_s']:.2f}, whole run "
                      f"x{theirs['wall_s'] / ours['wall_s']:.2f} faster")


if __name__ == "__main__":
    main()
