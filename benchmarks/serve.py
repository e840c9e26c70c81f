"""`imgfeat serve` under load against offline `imgfeat embed`, measured in the same run.

    python benchmarks/serve.py [--images DIR] [--model-dir DIR] [--clients 1,4,16,64] [--requests 400]
                               [--seconds 60] [--repeats 2] [--soak 10000] [--encoding json]

One server (`imgfeat serve`, one worker, defaults otherwise) on 127.0.0.1 and N concurrent clients,
each sending one image per request (multipart upload to /v1/embed) back to back on a keep-alive
connection; the requests cycle through the images. Per level: requests/s, latency p50/p95/p99,
the mean batch size the server formed (from /metrics). Offline, on the same images and engine:
`imgfeat embed` (the command, its images/s), one image at a time in-process (decode, pre-process,
forward: the offline single-image latency), and the model-only bound (forward passes over
pre-processed batches of 8). Offline runs and server levels alternate, `--repeats` times, and
medians are reported. `--soak N` then sends N more requests at 16 clients and reports errors and
the server's RSS growth. Clients are plain asyncio sockets, so their own cost stays small, but
they share the machine with the server: on a small machine that is part of what is measured.
Without --model-dir a PP-ShiTuV2_rec with seeded random weights is exported (the official
model's compute); without --images the drink gallery from ../shared, else synthetic JPEGs.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed import default_images, default_model_dir, scratch_dir  # noqa: E402  (the same defaults as benchmarks/embed.py)

ENTRY = "from imgfeat_cli.cli.entry import main; main()"
BOUNDARY = "imgfeat-bench-boundary"


def multipart(path: str, encoding: str) -> bytes:
    data = Path(path).read_bytes()
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"encoding\"\r\n\r\n{encoding}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"i.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def request(host: str, body: bytes) -> bytes:
    return (f"POST /v1/embed HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def client(host: str, port: int, requests: List[bytes], start: int, stride: int, deadline: float,
                 out: List[Tuple[float, int]], budget: List[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = start
    try:
        while budget[0] > 0 and time.monotonic() < deadline:
            budget[0] -= 1
            t = time.perf_counter()
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            await reader.readexactly(length)
            out.append((time.perf_counter() - t, status))
            i += stride
    finally:
        writer.close()


async def level(host: str, port: int, requests: List[bytes], clients: int, count: int,
                seconds: float) -> Tuple[float, List[Tuple[float, int]]]:
    out: List[Tuple[float, int]] = []
    budget, deadline = [count], time.monotonic() + seconds
    t = time.perf_counter()
    await asyncio.gather(*(client(host, port, requests, c, clients, deadline, out, budget) for c in range(clients)))
    return time.perf_counter() - t, out


def metric(url: str, name: str) -> float:
    import requests

    text = requests.get(url + "/metrics", timeout=30).text
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def offline_embed(images: List[str], model_dir: str, backend: str, tmp: Path, run: int) -> float:
    listing = tmp / "images.txt"
    listing.write_text("\n".join(images) + "\n")
    res = subprocess.run([sys.executable, "-c", ENTRY, "embed", "-", "--out", str(tmp / f"off{run}.jsonl"),
                          "--model-dir", model_dir, "--backend", backend, "--json", "--overwrite"],
                         stdin=open(listing), capture_output=True, text=True, timeout=3600)
    if res.returncode != 0:
        raise SystemExit(f"imgfeat embed failed: {res.stderr}")
    return float(json.loads(res.stdout)["images_per_s"])


def offline_single_ms(model, images: List[str]) -> float:
    """Median time to decode, pre-process and embed one image alone, in this process."""
    from imgfeat_cli.imaging.decode import DEFAULT_LIMITS
    from imgfeat_cli.serve import backend

    times = []
    for path in images[:64]:
        data = Path(path).read_bytes()
        t = time.perf_counter()
        row, _, _ = backend.prepare(model, data, path, DEFAULT_LIMITS)
        backend.embed(model, row[None])
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def model_bound(model, images: List[str]) -> float:
    from imgfeat_cli.imaging.decode import DEFAULT_LIMITS
    from imgfeat_cli.serve import backend

    rows = [backend.prepare(model, Path(p).read_bytes(), p, DEFAULT_LIMITS)[0] for p in images[:160]]
    batches = [np.stack(rows[i:i + 8]) for i in range(0, len(rows), 8)]
    t = time.perf_counter()
    for b in batches:
        backend.embed(model, b)
    return len(rows) / (time.perf_counter() - t)


def start_server(model_dir: str, backend: str, tmp: Path) -> Tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, "serve", "--model-dir", model_dir, "--backend", backend,
                             "--port", "0", "--json", "--data-dir", str(tmp / "data"),
                             "-o", "Serve.queue_size=1024"],
                            stdout=subprocess.PIPE, stderr=open(tmp / "server.log", "wb"), text=True)
    text = ""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"the server did not start: {(tmp / 'server.log').read_text()[-2000:]}")
        text += line
        try:
            doc = json.loads(text)
            break
        except ValueError:
            continue
    return proc, doc["url"], int(doc["pid"])


def summarize(elapsed: float, out: List[Tuple[float, int]]) -> Dict[str, float]:
    lat = np.asarray([t for t, s in out if s == 200]) * 1000
    return {"rps": len(out) / elapsed, "p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
            "p99": float(np.percentile(lat, 99)), "errors": sum(1 for _, s in out if s != 200), "n": len(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images")
    ap.add_argument("--model-dir")
    ap.add_argument("--clients", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=400, help="requests per level and repeat (at most)")
    ap.add_argument("--seconds", type=float, default=60, help="time per level and repeat (at most)")
    ap.add_argument("--limit", type=int, default=320, help="images used")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--soak", type=int, default=0, help="then N requests at 16 clients: errors, RSS growth")
    ap.add_argument("--encoding", default="json", choices=("json", "float16_base64"))
    args = ap.parse_args()
    from imgfeat_cli.pipeline.inputs import walk_images
    from imgfeat_cli.pipeline.predictor import create_model

    tmp = scratch_dir("imgfeat-serve-bench-")
    model_dir = args.model_dir or default_model_dir(tmp)
    images = (walk_images(Path(args.images)) if args.images else default_images(tmp))[: args.limit]
    model = create_model(model_dir=model_dir)
    engine = model.recipe["backend"]
    proc, url, pid = start_server(model_dir, engine, tmp)
    host, port = url.split("//")[1].split(":")
    bodies = [request(host, multipart(p, args.encoding)) for p in images]
    levels = [int(c) for c in args.clients.split(",")]
    try:
        asyncio.run(level(host, int(port), bodies, 4, 64, 60))  # warm-up
        results: Dict[int, List[Dict[str, float]]] = {c: [] for c in levels}
        offline, single, bound = [], [], []
        for run in range(args.repeats):
            offline.append(offline_embed(images, model_dir, engine, tmp, run))
            single.append(offline_single_ms(model, images))
            bound.append(model_bound(model, images))
            for clients in levels:
                n0, s0 = metric(url, "imgfeat_batch_size_count"), metric(url, "imgfeat_batch_size_sum")
                res = summarize(*asyncio.run(level(host, int(port), bodies, clients, args.requests, args.seconds)))
                n1, s1 = metric(url, "imgfeat_batch_size_count"), metric(url, "imgfeat_batch_size_sum")
                res["batch"] = (s1 - s0) / max(1.0, n1 - n0)
                results[clients].append(res)
        off, one, mb = statistics.median(offline), statistics.median(single), statistics.median(bound)
        print(f"images: {len(images)}  engine: {model.backend} {model.precision}  cores: {os.cpu_count()}  "
              f"repeats: {args.repeats}  encoding: {args.encoding}")
        print(f"offline imgfeat embed: {off:.1f} images/s; single image in-process: {one:.1f} ms; "
              f"model-only bound (batch 8): {mb:.1f} images/s")
        print("| clients | req/s | x offline embed | p50 ms | p95 ms | p99 ms | p99/p50 | mean batch | errors |")
        print("|---|---|---|---|---|---|---|---|---|")
        for clients in levels:
            med = {k: statistics.median(r[k] for r in results[clients]) for k in results[clients][0]}
            print(f"| {clients} | {med['rps']:.1f} | {med['rps'] / off:.2f} | {med['p50']:.1f} | {med['p95']:.1f} | "
                  f"{med['p99']:.1f} | {med['p99'] / med['p50']:.2f} | {med['batch']:.2f} | "
                  f"{sum(r['errors'] for r in results[clients])} |")
        first = statistics.median(r["p50"] for r in results[levels[0]])
        print(f"{levels[0]} client(s) p50 - offline single-image latency: {first - one:+.1f} ms")
        if args.soak:
            before = rss_mb(pid)
            elapsed, out = asyncio.run(level(host, int(port), bodies, 16, args.soak, 24 * 3600))
            res = summarize(elapsed, out)
            print(f"soak: {res['n']} requests at 16 clients in {elapsed:.0f} s ({res['rps']:.1f} req/s), "
                  f"{res['errors']} errors, p50 {res['p50']:.1f} ms, p99 {res['p99']:.1f} ms, "
                  f"server RSS {before:.0f} -> {rss_mb(pid):.0f} MB")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
