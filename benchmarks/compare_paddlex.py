"""imgfeat against PaddleX on the same inference folder and the same images, in one run.

    python benchmarks/compare_paddlex.py [--model-dir DIR] [--images DIR] [--limit 512]
                                         [--batches 1,8,16,32] [--repeats 3] [--json] [--no-cold]
                                         [--streams N]

Installs nothing. PaddleX is optional: with it importable (a separate venv is fine:
``pip install paddlex paddlepaddle opencv-contrib-python pypdfium2`` plus ``pip install -e .[hpi]``)
its predictor runs beside imgfeat; without it imgfeat's figures and the model-only bound are still
printed. Both sides run end to end (decode, pre-process, infer, collect features); runs alternate
so machine noise hits both, and medians are reported.

imgfeat runs as ``imgfeat embed`` would for that many images (the streams plan: on 2 cores, 2
single-threaded replicas for 2048+ images; ``--streams`` forces a number), with its workers started
once before timing, as each side's predictor is; "1 process" is the same model without streams. Reported: images/s of each
side at batch 1 and at each batch size, the best batch of each, the ratios imgfeat fp32 / PaddleX
and best high-performance mode / PaddleX (both at their best batch), the max/mean cosine gap
between their features for the same images, and a cold-start figure per side (load the model, then
embed every image once: what one command costs, worker start-up included). Without --model-dir a
PP-ShiTuV2_rec with random weights is exported (same compute as the official model).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed import default_images, default_model_dir  # noqa: E402  (the same image set as benchmarks/embed.py)

from imgfeat_cli.pipeline.job import run_embed  # noqa: E402
from imgfeat_cli.pipeline.inputs import InputItem, walk_images  # noqa: E402
from imgfeat_cli.pipeline import batch as pipeline_batch  # noqa: E402
from imgfeat_cli.pipeline.embedder import plan_streams  # noqa: E402
from imgfeat_cli.models import backends as hpi  # noqa: E402
from imgfeat_cli.pipeline.predictor import create_model  # noqa: E402


def _paddlex() -> Any:
    try:
        import paddlex  # noqa: F401
    except Exception as exc:  # ImportError, or paddlex failing on a missing optional dependency
        print(f"PaddleX not available ({exc.__class__.__name__}: {str(exc)[:120]}): imgfeat figures only",
              file=sys.stderr)
        return None
    return paddlex


def _imgfeat_run(model: Any, images: List[str], bs: int, tmp: Path) -> Tuple[float, np.ndarray]:
    """One end-to-end run; a model with a stream pool uses it, any other runs in this process."""
    out = tmp / "imgfeat.npy"
    res = run_embed(images, str(out), model, fmt="npy", batch_size=bs, overwrite=True,
                    streams=None if model.stream_pool is not None else 1)
    return res.images_per_s, np.load(out)


def _default_model(model_dir: str, n_images: int, n_streams: Any = None, **kw: Any) -> Tuple[Any, int]:
    """The model as ``imgfeat embed`` would set it up for this many images (or ``n_streams``): the
    streams plan, with the workers started once (like a predictor, before timing; the warm-up run
    absorbs their ~2 s start, which the cold-start line reports separately)."""
    plan = plan_streams(n_streams, None, n_images, "cpu")
    model = create_model(model_dir=model_dir, cpu_threads=plan.threads if plan.streams > 1 else None, **kw)
    if plan.streams > 1:
        model.start_streams(plan.streams - 1, plan.threads)
    return model, plan.streams


def _cold(fn: Callable[[], None], n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def _paddlex_run(px_model: Any, images: List[str], bs: int) -> Tuple[float, np.ndarray]:
    t = time.perf_counter()
    feats = []
    for j, r in enumerate(px_model.predict(images, batch_size=bs)):
        f = np.asarray(r["feature"], dtype=np.float32)
        # PaddleX 3.7 gives every result of a batch the whole batch's (bs, 512) matrix
        feats.append(f[j % bs] if f.ndim == 2 and f.shape[0] > 1 else f.reshape(-1))
    return len(images) / (time.perf_counter() - t), np.stack(feats)


def _model_only(model: Any, images: List[str], bs: int, repeats: int) -> float:
    arrays = [pipeline_batch.preprocess(model, InputItem(p, p)) for p in images]
    batches = [np.stack(arrays[i:i + bs]) for i in range(0, len(arrays), bs)]
    model.runner(batches[0])
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for b in batches:
            model.runner(b)
        rates.append(len(arrays) / (time.perf_counter() - t))
    return statistics.median(rates)


def _norm(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images")
    ap.add_argument("--model-dir")
    ap.add_argument("--limit", type=int, default=512)
    ap.add_argument("--batches", default="1,8,16,32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start (load + embed once) figures")
    ap.add_argument("--streams", type=int, default=None,
                    help="inference streams for the timed imgfeat modes [default: what imgfeat embed plans "
                         "for this many images]; e.g. 2 to see a large job's steady state on 2 cores")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="imgfeat-cmp-"))
    model_dir = args.model_dir or default_model_dir(tmp)
    images = (walk_images(Path(args.images)) if args.images else default_images(tmp))[: args.limit]
    batches = [int(b) for b in args.batches.split(",")]

    px = _paddlex()
    fp32, n_streams = _default_model(model_dir, len(images), args.streams)
    fp32_label = f"imgfeat fp32 ({n_streams} streams)" if n_streams > 1 else "imgfeat fp32"
    single = create_model(model_dir=model_dir)
    modes: Dict[str, Any] = {fp32_label: fp32}
    if n_streams > 1:
        modes["imgfeat fp32 (1 process)"] = single
    if hpi.onnxruntime_available():
        modes["imgfeat onnxruntime fp32"] = _default_model(model_dir, len(images), args.streams,
                                                           backend="onnxruntime")[0]
    if hpi.native_bf16():
        modes["imgfeat paddle bf16"] = _default_model(model_dir, len(images), args.streams, precision="bf16")[0]
    px_model = px.create_model("PP-ShiTuV2_rec", model_dir=model_dir) if px else None

    runners: Dict[str, Callable[[int], Tuple[float, np.ndarray]]] = {
        name: (lambda bs, m=m: _imgfeat_run(m, images, bs, tmp)) for name, m in modes.items()}
    if px_model is not None:
        runners["PaddleX fp32"] = lambda bs: _paddlex_run(px_model, images, bs)
    rates: Dict[str, Dict[int, List[float]]] = {n: {b: [] for b in batches} for n in runners}
    feats: Dict[str, np.ndarray] = {}
    for name, run in runners.items():  # warm-up: oneDNN primitives, ONNX conversion, caches
        run(batches[0])
    for _ in range(args.repeats):
        for bs in batches:
            for name, run in runners.items():  # alternate sides within each repeat
                rate, f = run(bs)
                rates[name][bs].append(rate)
                feats[name] = f
    med = {n: {b: statistics.median(v) for b, v in per.items()} for n, per in rates.items()}
    best = {n: max(per.items(), key=lambda kv: kv[1]) for n, per in med.items()}
    bound_bs = best[fp32_label][0]
    for m in modes.values():
        m.close()
    # cold start, as one command: load the model, embed every image once, at each side's best
    # batch; alternating, medians (paddle itself is already imported on both sides)
    cold: Dict[str, List[float]] = {}
    if not args.no_cold:
        def imgfeat_cold() -> None:
            m, _ = _default_model(model_dir, len(images))
            with m:
                run_embed(images, str(tmp / "cold.npy"), m, fmt="npy", batch_size=bound_bs, overwrite=True)

        def paddlex_cold() -> None:
            for _ in px.create_model("PP-ShiTuV2_rec", model_dir=model_dir).predict(
                    images, batch_size=best["PaddleX fp32"][0]):
                pass
        for _ in range(args.repeats):
            cold.setdefault("imgfeat fp32 (default)", []).append(_cold(imgfeat_cold, len(images)))
            if px_model is not None:
                cold.setdefault("PaddleX fp32", []).append(_cold(paddlex_cold, len(images)))
    doc: Dict[str, Any] = {
        "images": len(images), "model_dir": model_dir, "batches": batches, "repeats": args.repeats,
        "images_per_s": {n: {str(b): round(v, 2) for b, v in per.items()} for n, per in med.items()},
        "best": {n: {"batch": b, "images_per_s": round(v, 2)} for n, (b, v) in best.items()},
        "streams": n_streams,
        "cold_start_images_per_s": {n: round(statistics.median(v), 2) for n, v in cold.items()},
        "model_only_bound_fp32": {"batch": bound_bs, "images_per_s": round(_model_only(single, images, bound_bs,
                                                                                    args.repeats), 2)}}
    if "PaddleX fp32" in best:
        px_best = best["PaddleX fp32"][1]
        hpi_best = max((v for n, (b, v) in best.items() if n.startswith("imgfeat")), default=0.0)
        cos = (_norm(feats[fp32_label]) * _norm(feats["PaddleX fp32"])).sum(axis=1)
        doc["ratios"] = {"imgfeat_fp32_vs_paddlex": round(best[fp32_label][1] / px_best, 3),
                         "best_hpi_vs_paddlex_fp32": round(hpi_best / px_best, 3),
                         "imgfeat_fp32_vs_paddlex_batch1": round(med[fp32_label][1] / med["PaddleX fp32"][1], 3)
                         if 1 in batches else None}
        doc["feature_agreement"] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
                                    "max_gap": float(1 - cos.min()), "mean_gap": float(1 - cos.mean())}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"images: {len(images)}  model: {model_dir}  repeats: {args.repeats} (medians)")
    head = "".join(f"{'bs ' + str(b):>10}" for b in batches)
    print(f"{'images/s':<28}{head}{'best':>16}")
    for n, per in med.items():
        print(f"{n:<28}" + "".join(f"{per[b]:>10.1f}" for b in batches)
              + f"{best[n][1]:>10.1f} @ {best[n][0]:<3}")
    mo = doc["model_only_bound_fp32"]
    print(f"model-only bound (fp32, one process, bs {mo['batch']}): {mo['images_per_s']:.1f} images/s")
    for n, v in doc["cold_start_images_per_s"].items():
        print(f"cold start, load + {len(images)} images: {n}: {v:.1f} images/s")
    if "ratios" in doc:
        r, fa = doc["ratios"], doc["feature_agreement"]
        print(f"imgfeat fp32 / PaddleX (best batches): {r['imgfeat_fp32_vs_paddlex']:.2f}x")
        print(f"best imgfeat mode / PaddleX fp32     : {r['best_hpi_vs_paddlex_fp32']:.2f}x")
        print(f"feature cosine imgfeat vs PaddleX    : min {fa['min_cosine']:.6f}, mean {fa['mean_cosine']:.6f}")


if __name__ == "__main__":
    main()
