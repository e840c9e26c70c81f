"""imgfeat's engines against PaddleX on the same inference folder and the same images, in one run.

    python benchmarks/compare_paddlex.py [--model-dir DIR] [--images DIR] [--limit 256]
                                         [--batches 1,8,16] [--repeats 3] [--int8-dir DIR]
                                         [--engines paddle,onnxruntime,openvino,bf16,int8,default]
                                         [--streams N] [--json] [--no-cold]

Installs nothing. PaddleX is optional: with it importable (a separate venv is fine) its predictor
runs beside imgfeat; without it imgfeat's figures are still printed. Rows: each imgfeat engine
(paddle fp32, onnxruntime fp32, OpenVINO fp32 when installed, bf16 where the CPU has it, int8 from
``imgfeat quantize``) and the default (no flags: the engine it picks at each batch size is named),
then PaddleX. Every row is measured twice per batch size, in the same alternating rounds: end to end
(files -> features, as ``imgfeat embed`` runs for that many images, or with ``--streams``) and the
model-only bound (the same model object on pre-decoded batches, one process), so each row shows
its end-to-end / bound ratio. Medians of ``--repeats`` rounds; the order of the rows rotates from
round to round so machine noise hits every row. Also printed: each row's ratio to PaddleX (best
batch against PaddleX's best batch), the cosine of its features to PaddleX's, and a cold-start
figure for the default and PaddleX (load the model, embed every image once).

Without ``--model-dir`` a PP-ShiTuV2_rec with seeded random weights is exported (the official
model's compute); without ``--int8-dir`` it is quantized here, calibrated on the benchmark images
(written even below the accuracy bar: a random model is not what the bar is for).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed import default_images, default_model_dir, scratch_dir  # noqa: E402  (the same image set as benchmarks/embed.py)

from imgfeat_cli.common.system import native_bf16  # noqa: E402
from imgfeat_cli.models.openvino import openvino_available  # noqa: E402
from imgfeat_cli.pipeline import batch as pipeline_batch  # noqa: E402
from imgfeat_cli.pipeline.embedder import plan_streams  # noqa: E402
from imgfeat_cli.pipeline.inputs import InputItem, walk_images  # noqa: E402
from imgfeat_cli import embed as run_embed  # noqa: E402
from imgfeat_cli.pipeline.predictor import create_model  # noqa: E402

PADDLEX = "PaddleX fp32"


def _paddlex() -> Any:
    try:
        import paddlex  # noqa: F401
    except Exception as exc:  # ImportError, or paddlex failing on a missing optional dependency
        print(f"PaddleX not available ({exc.__class__.__name__}: {str(exc)[:120]}): imgfeat figures only",
              file=sys.stderr)
        return None
    return paddlex


def _load(model_dir: str, n_images: int, n_streams: Any = None, **kw: Any) -> Any:
    """The model as ``imgfeat embed`` sets it up for this many images (or ``n_streams``): the
    streams plan, with the workers started once, before timing (like a predictor)."""
    plan = plan_streams(n_streams, None, n_images, "cpu")
    model = create_model(model_dir=model_dir, cpu_threads=plan.threads if plan.streams > 1 else None, **kw)
    if plan.streams > 1:
        model.start_streams(plan.streams - 1, plan.threads)
    return model


def _end_to_end(model: Any, images: List[str], bs: int, tmp: Path) -> Tuple[float, np.ndarray]:
    out = tmp / "imgfeat.npy"
    res = run_embed(images, str(out), model, fmt="npy", batch_size=bs, overwrite=True,
                    streams=None if model.stream_pool is not None else 1)
    return res.images_per_s, np.load(out)


def _bound(model: Any, arrays: np.ndarray, bs: int) -> float:
    """Model-only images/s: the model's own runner on pre-decoded batches (one warm-up batch)."""
    batches = [arrays[i:i + bs] for i in range(0, len(arrays), bs)]
    model.embed_batch(batches[0])
    t = time.perf_counter()
    for b in batches:
        model.embed_batch(b)
    return len(arrays) / (time.perf_counter() - t)


def _paddlex_run(px_model: Any, images: List[str], bs: int) -> Tuple[float, np.ndarray]:
    t = time.perf_counter()
    feats = []
    for j, r in enumerate(px_model.predict(images, batch_size=bs)):
        f = np.asarray(r["feature"], dtype=np.float32)
        # PaddleX 3.7 gives every result of a batch the whole batch's (bs, 512) matrix
        feats.append(f[j % bs] if f.ndim == 2 and f.shape[0] > 1 else f.reshape(-1))
    return len(images) / (time.perf_counter() - t), np.stack(feats)


def _norm(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _int8_dir(args: Any, model_dir: str, images: List[str], tmp: Path) -> str:
    if args.int8_dir:
        return args.int8_dir
    from imgfeat_cli.pipeline.quantize import quantize_model

    calib = args.images or os.path.commonpath(images)
    res = quantize_model(model_dir, calib, str(tmp / "int8"), force=True, log=lambda m: print(m, file=sys.stderr))
    print(f"int8: held-out cosine to fp32 mean {res.report['heldout']['cosine_mean']:.4f}", file=sys.stderr)
    return res.out


def _modes(args: Any, model_dir: str, images: List[str], batches: List[int], tmp: Path) -> Dict[str, Dict[int, Any]]:
    """Row label -> {batch size: model}; one model for every batch except the default, which
    decides per batch size as ``imgfeat embed -b N`` does."""
    want = args.engines.split(",")
    n = len(images)
    rows: Dict[str, Dict[int, Any]] = {}

    def every_batch(model: Any) -> Dict[int, Any]:
        return {b: model for b in batches}
    if "paddle" in want:
        rows["paddle fp32"] = every_batch(_load(model_dir, n, args.streams, backend="paddle"))
    if "onnxruntime" in want:
        rows["onnxruntime fp32"] = every_batch(_load(model_dir, n, args.streams, backend="onnxruntime"))
    if "openvino" in want and openvino_available():
        rows["openvino fp32"] = every_batch(_load(model_dir, n, args.streams, backend="openvino"))
    if "bf16" in want:
        if native_bf16():
            rows["paddle bf16"] = every_batch(_load(model_dir, n, args.streams, backend="paddle", precision="bf16"))
        else:
            print("bf16: this CPU has no native bf16 (avx512_bf16/amx_bf16): no bf16 row", file=sys.stderr)
    if "int8" in want:
        rows["int8 (imgfeat quantize)"] = every_batch(_load(_int8_dir(args, model_dir, images, tmp), n, args.streams))
    if "default" in want:
        rows["default"] = {b: _load(model_dir, n, args.streams, hpi_config={"batch_size": b}) for b in batches}
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images")
    ap.add_argument("--model-dir")
    ap.add_argument("--int8-dir", help="a folder made by imgfeat quantize [default: quantize here]")
    ap.add_argument("--engines", default="paddle,onnxruntime,openvino,bf16,int8,default")
    ap.add_argument("--limit", type=int, default=256)
    ap.add_argument("--batches", default="1,8,16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start (load + embed once) figures")
    ap.add_argument("--streams", type=int, default=None,
                    help="inference streams for the end-to-end runs [default: what imgfeat embed plans "
                         "for this many images]; e.g. 2 to see a large job's steady state on 2 cores")
    args = ap.parse_args()
    tmp = scratch_dir("imgfeat-cmp-")
    model_dir = args.model_dir or default_model_dir(tmp)
    images = (walk_images(Path(args.images)) if args.images else default_images(tmp))[: args.limit]
    batches = [int(b) for b in args.batches.split(",")]
    px = _paddlex()
    rows = _modes(args, model_dir, images, batches, tmp)
    any_model = next(iter(next(iter(rows.values())).values()))
    arrays = np.stack([pipeline_batch.preprocess(any_model, InputItem(p, p)) for p in images])
    px_model = px.create_model("PP-ShiTuV2_rec", model_dir=model_dir) if px else None

    e2e: Dict[str, Dict[int, List[float]]] = {r: {b: [] for b in batches} for r in list(rows) + ([PADDLEX] if px_model else [])}
    bound: Dict[str, Dict[int, List[float]]] = {r: {b: [] for b in batches} for r in rows}
    feats: Dict[str, np.ndarray] = {}
    runs: Dict[str, Callable[[int], Tuple[float, np.ndarray]]] = {
        r: (lambda bs, per=per: _end_to_end(per[bs], images, bs, tmp)) for r, per in rows.items()}
    if px_model is not None:
        runs[PADDLEX] = lambda bs: _paddlex_run(px_model, images[:32], bs)
        runs[PADDLEX](batches[0])  # warm-up
        runs[PADDLEX] = lambda bs: _paddlex_run(px_model, images, bs)
    for r, per in rows.items():  # warm-up: oneDNN primitives, OpenVINO's first inference
        _end_to_end(per[batches[0]], images[:32], batches[0], tmp)
    names = list(runs)
    for rep in range(args.repeats):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for bs in batches:
            for r in order:
                rate, f = runs[r](bs)
                e2e[r][bs].append(rate)
                feats[r] = f
                if r in rows:
                    bound[r][bs].append(_bound(rows[r][bs], arrays, bs))
    doc = _summary(args, rows, e2e, bound, feats, images, model_dir, batches)
    for per in rows.values():
        for m in set(per.values()):
            m.close()
    if not args.no_cold:
        doc["cold_start_images_per_s"] = _cold(px, model_dir, images, doc, args.repeats, tmp)
    _render(doc, args.json)


def _summary(args: Any, rows: Dict[str, Dict[int, Any]], e2e: Dict[str, Dict[int, List[float]]],
             bound: Dict[str, Dict[int, List[float]]], feats: Dict[str, np.ndarray], images: List[str],
             model_dir: str, batches: List[int]) -> Dict[str, Any]:
    med = {r: {b: statistics.median(v) for b, v in per.items()} for r, per in e2e.items()}
    bmed = {r: {b: statistics.median(v) for b, v in per.items()} for r, per in bound.items()}
    best = {r: max(per.items(), key=lambda kv: kv[1]) for r, per in med.items()}
    table: Dict[str, Any] = {}
    for r, per in med.items():
        row: Dict[str, Any] = {"best": {"batch": best[r][0], "images_per_s": round(best[r][1], 2)}}
        for b in batches:
            cell: Dict[str, Any] = {"end_to_end": round(per[b], 2)}
            if r in bmed:
                cell.update(bound=round(bmed[r][b], 2), ratio_to_bound=round(per[b] / bmed[r][b], 3))
            row[str(b)] = cell
        if r in rows:
            m = rows[r][best[r][0]]
            row["engine"] = f"{m.backend} {m.precision}"
            if r == "default":
                row["engine_per_batch"] = {str(b): f"{rows[r][b].backend} {rows[r][b].precision}" for b in batches}
        if PADDLEX in med:
            row["vs_paddlex"] = round(best[r][1] / best[PADDLEX][1], 3)
            cos = (_norm(feats[r]) * _norm(feats[PADDLEX])).sum(axis=1)
            row["cosine_to_paddlex"] = {"min": float(cos.min()), "mean": float(cos.mean())}
        table[r] = row
    return {"images": len(images), "model_dir": model_dir, "batches": batches, "repeats": args.repeats,
            "streams": args.streams, "rows": table}


def _cold(px: Any, model_dir: str, images: List[str], doc: Dict[str, Any], repeats: int, tmp: Path) -> Dict[str, float]:
    """Load the model, embed every image once, at each side's best batch; alternating, medians."""
    rows = doc["rows"]
    cold: Dict[str, List[float]] = {}

    def imgfeat_cold() -> None:
        bs = rows["default"]["best"]["batch"] if "default" in rows else 8
        with _load(model_dir, len(images), hpi_config={"batch_size": bs}) as m:
            run_embed(images, str(tmp / "cold.npy"), m, fmt="npy", batch_size=bs, overwrite=True)

    def paddlex_cold() -> None:
        for _ in px.create_model("PP-ShiTuV2_rec", model_dir=model_dir).predict(
                images, batch_size=rows[PADDLEX]["best"]["batch"]):
            pass
    for _ in range(repeats):
        for name, fn in (("imgfeat default", imgfeat_cold), (PADDLEX, paddlex_cold if px else None)):
            if fn is not None:
                t = time.perf_counter()
                fn()
                cold.setdefault(name, []).append(len(images) / (time.perf_counter() - t))
    return {n: round(statistics.median(v), 2) for n, v in cold.items()}


def _render(doc: Dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    batches = doc["batches"]
    print(f"images: {doc['images']}  model: {doc['model_dir']}  repeats: {doc['repeats']} (medians); "
          f"each cell: end-to-end images/s (model-only bound, ratio)")
    print(f"{'':<26}" + "".join(f"{'bs ' + str(b):>24}" for b in batches) + f"{'best':>14}{'vs PaddleX':>12}")
    for r, row in doc["rows"].items():
        cells = ""
        for b in batches:
            c = row[str(b)]
            cells += (f"{c['end_to_end']:>9.1f} ({c['bound']:6.1f}, {c['ratio_to_bound']:.2f})" if "bound" in c
                      else f"{c['end_to_end']:>9.1f}{'':>15}")
        vs = f"{row['vs_paddlex']:.2f}x" if "vs_paddlex" in row else ""
        print(f"{r:<26}{cells}{row['best']['images_per_s']:>8.1f} @ {row['best']['batch']:<3}{vs:>12}")
    for r, row in doc["rows"].items():
        extra = [f"engine {row['engine']}"] if "engine" in row else []
        if "engine_per_batch" in row:
            extra = ["engine per batch " + ", ".join(f"bs {b}: {e}" for b, e in row["engine_per_batch"].items())]
        if "cosine_to_paddlex" in row and r != PADDLEX:
            extra.append(f"cosine to PaddleX min {row['cosine_to_paddlex']['min']:.6f}")
        if extra:
            print(f"  {r}: " + "; ".join(extra))
    for n, v in doc.get("cold_start_images_per_s", {}).items():
        print(f"cold start, load + {doc['images']} images: {n}: {v:.1f} images/s")


if __name__ == "__main__":
    main()
