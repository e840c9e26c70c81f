"""The Ray engine on a real multi-node cluster on this machine (`ray.cluster_utils.Cluster`: a head
without CPUs and two one-CPU worker nodes, actors reserving half a CPU each), driven by `imgfeat
embed --engine ray --ray-address` in its own process: work spreads over both nodes (the summary says
how many rows each embedded), the vectors equal the local engine's bit for bit, and a worker node
removed mid-run loses no row and duplicates none (the job completes, or `--resume` completes it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray.data")

from test_ray import _assert_matches, _rows, photos, reference  # noqa: E402,F401

# one worker runs every Ray test (under pytest-xdist): two Ray clusters at once on 2 cores starve both
pytestmark = pytest.mark.xdist_group("ray")

ROOT = Path(__file__).resolve().parents[1]
#: Every Ray process (nodes, actors, the driver) on 127.0.0.1 and importing this checkout. (The
#: variable's name says Windows/OSX; on Linux it makes Ray use the loopback address as node IP.)
ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)  # inherited by the node processes started below
    try:
        small = {"object_store_memory": 150 << 20}
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **small})
        workers = [c.add_node(num_cpus=1, **small) for _ in range(2)]
        c.wait_for_nodes()
        yield c, workers
        c.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def embed_cmd(c, photos: Path, model_dir: str, out: Path, *extra: str) -> list:
    return [sys.executable, "-c", "from imgfeat_cli.cli.entry import main; main()", "embed", str(photos),
            "--engine", "ray", "--ray-address", c.address, "--model-dir", model_dir, "--backend", "paddle",
            "--out", str(out), "-o", "Predict.rows_per_file=8", "--json", *extra]


def run(cmd: list, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV})


@pytest.mark.slow
def test_work_spreads_over_both_nodes_with_identical_vectors(cluster, photos, model_dir, reference, tmp_path):
    c, workers = cluster
    proc = run(embed_cmd(c, photos, model_dir, tmp_path / "feats"))
    assert proc.returncode == 4, proc.stderr  # the truncated JPEG
    doc = json.loads(proc.stdout)
    assert (doc["total"], doc["embedded"], doc["failed"], doc["streams"]) == (65, 64, 1, 2)
    ids = {w.node_id for w in workers}
    assert set(doc["nodes"]) == ids and all(rows > 0 for rows in doc["nodes"].values()), doc["nodes"]
    assert sum(doc["nodes"].values()) == 65
    _assert_matches(_rows(pq.read_table(tmp_path / "feats")), reference, photos)


@pytest.mark.slow
def test_a_worker_node_lost_mid_run_loses_and_duplicates_nothing(cluster, photos, model_dir, reference, tmp_path):
    c, workers = cluster
    out = tmp_path / "feats"
    proc = subprocess.Popen(embed_cmd(c, photos, model_dir, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **ENV})
    deadline = time.monotonic() + 240
    while not list(out.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first complete file: the actors are up and embedding
    c.remove_node(workers[1])
    stdout, stderr = proc.communicate(timeout=300)
    if proc.returncode not in (0, 4):  # the job may fail with the node: a resume must finish it
        assert "--resume" in stderr and stderr.count("\n") <= 2, stderr
        again = run(embed_cmd(c, photos, model_dir, out, "--resume"))
        assert again.returncode in (0, 4), again.stderr
    else:
        assert sum(json.loads(stdout)["nodes"].values()) == 65
    table = pq.read_table(out)
    paths = table.column("input_path").to_pylist()
    assert len(paths) == len(set(paths)) == 65  # every input once: nothing lost, nothing twice
    _assert_matches(_rows(table), reference, photos)
    c.add_node(num_cpus=1, object_store_memory=150 << 20)  # leave two workers for any later test
