"""The Ray engine: the callable class on plain batches, the output folder, listing URIs and the
actor plan (fast, no Ray started), then whole jobs on a local 2-CPU Ray instance (slow)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import make_photos
from imgfeat_cli.common.errors import UsageError
from imgfeat_cli.pipeline.readers import read_features

# one worker runs every Ray test (under pytest-xdist): two Ray clusters at once on 2 cores starve both
pytestmark = pytest.mark.xdist_group("ray")

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """64 small JPEGs (odd ones in b/) and one truncated JPEG."""
    root = make_photos(tmp_path_factory.mktemp("ray") / "imgs", [(36 + i % 5 * 7, 48 + i % 3 * 9) for i in range(64)],
                       seed=5, subdir_odd=True)
    (root / "broken.jpg").write_bytes((root / "p0.jpg").read_bytes()[:120])
    return root


@pytest.fixture(scope="module")
def reference(photos, model_dir) -> dict:
    """What imgfeat's own pipeline gives for the photos: path -> vector."""
    from imgfeat_cli.pipeline.embedder import embed_to_memory
    from imgfeat_cli.pipeline.predictor import create_model

    # paddle, named: the default engine is measured per thread count and could differ between runs
    sink = embed_to_memory(create_model(model_dir=model_dir, backend="paddle"), str(photos), batch_size=8)
    assert len(sink.paths) == 64 and len(sink.errors) == 1
    return dict(zip(sink.paths, sink.features))


def _rows(table) -> dict:
    """input_path -> (feature or None, error or None)."""
    return {p: (None if f is None else np.asarray(f, np.float32), e)
            for p, f, e in zip(*(table.column(c).to_pylist() for c in ("input_path", "feature", "error")))}


def _assert_matches(rows: dict, reference: dict, photos: Path, exact: bool = True) -> None:
    """Every image's vector equals the reference (paddle), or, for the default engine, is within
    the exact engines' bar (cosine >= 0.9999)."""
    assert len(rows) == 65
    failed = {p: e for p, (f, e) in rows.items() if e is not None}
    assert list(failed) == [str(photos / "broken.jpg")] and "truncated" in failed[str(photos / "broken.jpg")]
    assert rows[str(photos / "broken.jpg")][0] is None
    for path, vec in reference.items():
        assert np.array_equal(rows[path][0], vec) if exact else float(rows[path][0] @ vec) >= 0.9999, path


# -- fast: no Ray ----------------------------------------------------------------------------------

def test_embedder_on_pandas_and_arrow_batches(photos, model_dir, reference, tmp_path):
    pd = pytest.importorskip("pandas")
    from imgfeat_cli.distributed.ray_embed import ImageEmbedder

    embedder = ImageEmbedder(model_dir, backend="paddle")
    paths = [str(photos / "p0.jpg"), str(photos / "broken.jpg"), str(tmp_path / "missing.jpg"), str(photos / "b" / "p1.jpg")]
    out = embedder(pd.DataFrame({"path": paths, "label": [7, 8, 9, 10]}))
    assert out.column_names == ["input_path", "feature", "error", "label"]
    assert out.schema.field("feature").type == pa.list_(pa.float32(), 512)
    assert json.loads(out.schema.metadata[b"imgfeat"])["model"]["name"] == "PP-ShiTuV2_rec"
    rows = _rows(out)
    assert list(rows) == paths and out.column("label").to_pylist() == [7, 8, 9, 10]
    assert np.array_equal(rows[paths[0]][0], reference[paths[0]]) and rows[paths[0]][1] is None
    assert rows[paths[1]][0] is None and "truncated" in rows[paths[1]][1]
    assert rows[paths[2]][0] is None and "not found" in rows[paths[2]][1]
    # bytes (as read_binary_files gives them), a file:// URI and a reason known beforehand
    blobs = pa.table({"bytes": [Path(paths[3]).read_bytes(), None], "path": [paths[3], "file://" + paths[0]],
                      "error": [None, None]})
    again = _rows(embedder(blobs))
    assert np.array_equal(again[paths[3]][0], reference[paths[3]])
    assert np.array_equal(again["file://" + paths[0]][0], reference[paths[0]])
    known = _rows(embedder(pa.table({"path": [paths[0]], "error": ["listed but unreadable"]})))
    assert known[paths[0]] == (None, "listed but unreadable")
    with pytest.raises(UsageError, match="'path'"):
        embedder(pa.table({"x": [1]}))


def test_plan_actors_leaves_cpus_for_ray_tasks():
    from imgfeat_cli.distributed.ray_plan import ACTOR_CPU_SHARE, plan_actors

    small = plan_actors(2, 0, 2)
    assert (small.actors, small.threads, small.num_cpus, small.num_gpus) == (2, 1, ACTOR_CPU_SHARE, 0.0)
    assert small.actors * small.num_cpus < 2  # read and write tasks always find a CPU
    big = plan_actors(64, 0, 16)
    assert (big.actors, big.threads) == (16, 4) and big.batch_size == 8
    grow = plan_actors(2, 0, 2, actors=6)  # more than fit now: a pool that may grow (autoscaling)
    assert (grow.actors, grow.max_actors, grow.describe()["actors"]) == (2, 6, 6)
    gpu = plan_actors(32, 4, 8, device="gpu")
    assert (gpu.actors, gpu.num_gpus, gpu.batch_size) == (4, 1.0, 32)
    with pytest.raises(UsageError, match="no GPUs"):
        plan_actors(8, 0, 8, device="gpu")
    with pytest.raises(UsageError, match="threads per actor"):
        plan_actors(4, 0, 4, threads=16)
    with pytest.raises(UsageError, match="actors"):
        plan_actors(4, 0, 4, actors=0)


def _table(paths, dim=4, failed=()):
    feats = [None if p in failed else [float(i + 1)] * dim for i, p in enumerate(paths)]
    return pa.table({"input_path": paths, "feature": pa.array(feats, pa.list_(pa.float32(), dim)),
                     "error": [("bad " + p) if p in failed else None for p in paths]})


def _feed(folder, paths, dim=4, failed=()):
    """Rows as a job's driver hands them to a sink: features in input order, failures by reason."""
    for i, p in enumerate(paths):
        if p in failed:
            folder.error(p, "bad " + p)
        else:
            folder.write([p], np.full((1, dim), float(i + 1), np.float32))


def test_parquet_folder_resume_overwrite_and_refusals(tmp_path):
    from imgfeat_cli.distributed.folder import ParquetFolder

    out = tmp_path / "out"
    ident = {"name": "m", "sha256": "abc"}
    first = ParquetFolder(str(out), np.float32, rows_per_file=2)
    first.open(ident)
    _feed(first, ["a", "b", "c"], failed={"b"})
    files, errors = first.finish({"Predict": {"engine": "ray"}})
    files, config = files[:-1], files[-1]
    assert len(files) == 2 and errors.endswith("_errors.jsonl") and config.endswith("_imgfeat.yaml")  # 2 rows, then 1
    assert [pq.read_metadata(f).num_rows for f in files] == [2, 1]
    assert yaml.safe_load(Path(config).read_text())["Output"]["rows"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["_errors.jsonl", "_imgfeat.yaml"] + [Path(f).name for f in files]
    assert json.loads((out / "_errors.jsonl").read_text()) == {"input_path": "b", "error": "bad b"}
    table = read_features(str(out))  # the folder reads as one table; failed rows are not features
    assert table.paths == ["a", "c"] and table.features.shape == (2, 4) and table.columns == {}

    with pytest.raises(UsageError, match="already holds 2 Parquet files"):
        ParquetFolder(str(out), np.float32).check()
    with pytest.raises(UsageError, match="contradict"):
        ParquetFolder(str(out), np.float32, resume=True, overwrite=True).check()
    with pytest.raises(UsageError, match="made with model"):
        ParquetFolder(str(out), np.float32, resume=True).open({"name": "other", "sha256": "def"})
    with pytest.raises(UsageError, match="made with dtype"):
        ParquetFolder(str(out), np.float16, resume=True).open(ident)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        ParquetFolder(str(tmp_path / "file"), np.float32).check()

    again = ParquetFolder(str(out), np.float32, resume=True)
    assert again.open(ident) == {"a", "b", "c"}  # failed inputs are outcomes too: not redone
    with pytest.raises(UsageError, match="another imgfeat run"):
        ParquetFolder(str(out), np.float32, resume=True).open(ident)  # one writer per folder
    _feed(again, ["d"])
    again.finish({})
    assert len(read_features(str(out)).paths) == 3

    new = ParquetFolder(str(out), np.float32, overwrite=True)
    new.open(ident)
    _feed(new, ["z"])
    new.flush()
    assert len(read_features(str(out)).paths) == 3  # the old set stays until the new one is complete
    new.finish({})
    assert read_features(str(out)).paths == ["z"] and not (out / "_errors.jsonl").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_parquet_folder_through_a_file_uri(tmp_path):
    from imgfeat_cli.distributed.folder import ParquetFolder

    folder = ParquetFolder("file://" + str(tmp_path / "uri"), np.float32, rows_per_file=1)
    folder.open({"name": "m"})
    _feed(folder, ["a", "b"])
    files, errors = folder.finish({})
    assert len(files) == 3 and errors is None and files[0].startswith("file://" + str(tmp_path / "uri") + "/part-")
    assert read_features(str(tmp_path / "uri")).paths == ["a", "b"]
    assert ParquetFolder("file://" + str(tmp_path / "uri"), np.float32, resume=True).open({"name": "m"}) == {"a", "b"}


def test_folder_that_stays_empty_is_removed_and_unwritable_refused(tmp_path):
    from imgfeat_cli.distributed.folder import ParquetFolder

    out = tmp_path / "new" / "out"
    folder = ParquetFolder(str(out), np.float32)
    folder.open({"name": "m"})
    folder.release()  # e.g. Ray could not be reached
    assert not out.exists()
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(UsageError, match="not writable"):
            ParquetFolder(str(locked / "out"), np.float32).check()
    finally:
        locked.chmod(0o700)


def test_read_features_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="without .parquet files"):
        read_features(str(tmp_path / "empty"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(_table(["a"], dim=4), mixed / "x.parquet")
    pq.write_table(_table(["b"], dim=8), mixed / "y.parquet")
    pq.write_table(_table(["c"], dim=8), mixed / "_ignored.parquet")
    with pytest.raises(UsageError, match="different lengths"):
        read_features(str(mixed))


def test_storage_lists_and_reads_uris(tmp_path):
    from imgfeat_cli.common.errors import ImageDecodeError
    from imgfeat_cli.distributed.storage import Reader, list_images, resolve

    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / ".hidden").mkdir()
    for name in ("d/b.jpg", "d/sub/a.PNG", "d/notes.txt", "d/.hidden/c.jpg"):
        (tmp_path / name).write_bytes(b"12345")
    uri = "file://" + str(tmp_path / "d")
    found, failed = list_images(uri)
    assert found == [uri + "/b.jpg", uri + "/sub/a.PNG"] and failed == []
    assert list_images(uri + "/b.jpg") == ([uri + "/b.jpg"], [])
    assert list_images(uri + "/nope")[1][0][1].endswith("does not exist")
    reader = Reader()
    assert reader.read(uri + "/b.jpg", 100) == b"12345"
    with pytest.raises(ImageDecodeError, match="limit"):
        reader.read(uri + "/b.jpg", 4)
    with pytest.raises(ImageDecodeError, match="does not exist"):
        reader.read(uri + "/nope.jpg", 100)
    with pytest.raises(UsageError, match="cannot open"):
        resolve("nosuchscheme://x/y")


def test_cli_ray_usage_errors(invoke, photos, model_dir, tmp_path):
    base = ["embed", str(photos), "--model-dir", model_dir, "--engine", "ray"]
    res = invoke(*base, "--out", f"{tmp_path / 'o'}/", "--format", "jsonl")
    assert res.exit_code == 2 and "folder of Parquet files" in res.stderr
    res = invoke("embed", str(photos), "--model-dir", model_dir, "--out", tmp_path / "o.jsonl", "--actors", "2")
    assert res.exit_code == 2 and "--engine ray" in res.stderr
    res = invoke(*base, "--out", tmp_path / "o", "--hpi")
    assert res.exit_code == 2 and "--precision" in res.stderr and not (tmp_path / "o").exists()
    res = invoke(*base, "--out", tmp_path / "o", "--streams", "2")
    assert res.exit_code == 2 and "--actors" in res.stderr
    res = invoke("embed", str(photos), "--model-dir", model_dir, "--out", tmp_path / "o", "-o", "Predict.engine=spark")
    assert res.exit_code == 2 and "Predict.engine" in res.stderr
    pytest.importorskip("ray.data")
    (tmp_path / "afile").write_text("x")
    res = invoke(*base, "--out", tmp_path / "afile")
    assert res.exit_code == 2 and "is a file" in res.stderr
    res = invoke(*base, "--out", tmp_path / "o", "--ray-address", "127.0.0.1:1")
    assert res.exit_code == 1 and "cannot reach the Ray cluster at 127.0.0.1:1" in res.stderr
    assert not (tmp_path / "o").exists()
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / os.fsdecode(b"bad\xff.jpg")).write_bytes((photos / "p0.jpg").read_bytes())
    res = invoke("embed", str(odd), "--model-dir", model_dir, "--engine", "ray", "--out", tmp_path / "o")
    assert res.exit_code == 1 and "not valid UTF-8" in res.stderr and not (tmp_path / "o").exists()
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("x")
    res = invoke("embed", str(tmp_path / "no_images"), "--model-dir", model_dir, "--engine", "ray", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "no images found" in res.stderr


# -- slow: a local Ray instance ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 << 20)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_cli_ray_engine_json_errors_and_resume(ray_local, invoke, photos, model_dir, reference, tmp_path):
    out = tmp_path / "feats"
    args = ["embed", str(photos), "--model-dir", model_dir, "--engine", "ray", "--out", out, "--backend", "paddle",
            "-o", "Predict.rows_per_file=16", "--json"]
    res = invoke(*args)
    assert res.exit_code == 4, res.stderr
    doc = json.loads(res.stdout)  # stdout is one JSON document, whatever the actors print
    assert (doc["total"], doc["embedded"], doc["failed"], doc["engine"], doc["streams"]) == (65, 64, 1, "ray", 2)
    files = sorted(out.glob("part-*.parquet"))
    assert [pq.read_metadata(f).num_rows for f in files] == [16, 16, 16, 16, 1]
    _assert_matches(_rows(pq.read_table(out)), reference, photos)
    assert json.loads((out / "_errors.jsonl").read_text())["input_path"] == str(photos / "broken.jpg")
    assert "engine: ray" in (out / "_imgfeat.yaml").read_text()
    one_file = tmp_path / "feats.jsonl"  # the Ray engine writes any output the local one writes
    res = invoke(*args[:7], one_file, "--backend", "paddle", "--json")
    assert res.exit_code == 4 and json.loads(res.stdout)["engine"] == "ray", res.stderr
    got = {r["input_path"]: np.asarray(r["feature"], np.float32) for r in map(json.loads, one_file.read_text().splitlines())}
    assert len(got) == 64 and all(np.array_equal(got[p], vec) for p, vec in reference.items())

    lost = pq.read_table(files[2]).column("input_path").to_pylist()
    files[2].unlink()
    res = invoke(*args, "--resume")
    assert res.exit_code in (0, 4), res.stderr
    doc = json.loads(res.stdout)
    assert doc["embedded"] + doc["failed"] == len(lost) and doc["already_done"] == 65 - len(lost)
    redone = pq.read_table(out / Path(doc["files"][0]).name).column("input_path").to_pylist()
    assert sorted(redone) == sorted(lost)
    _assert_matches(_rows(pq.read_table(out)), reference, photos)


@pytest.mark.slow
def test_embed_dataset_python_api(ray_local, photos, model_dir, reference):
    from imgfeat_cli.distributed.ray_embed import embed_dataset

    ds = embed_dataset(str(photos), model_dir=model_dir, actors=1)  # the default engine, chosen on the driver
    _assert_matches(_rows(pa.concat_tables(list(ds.iter_batches(batch_format="pyarrow", batch_size=None)))),
                    reference, photos, exact=False)


@pytest.mark.slow
def test_cpu_count_follows_the_actor_allocation(ray_local):
    from imgfeat_cli.common.system import cpu_count

    @ray_local.remote(num_cpus=1)
    def inside():
        return cpu_count(), os.environ.get("OMP_NUM_THREADS")

    assert ray_local.get(inside.remote()) == (1, "1")


def test_missing_ray_is_a_usage_error(monkeypatch):
    import builtins

    from imgfeat_cli.distributed.ray_embed import require_ray

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UsageError, match="not installed") as err:
        require_ray()
    assert 'pip install "ray[data]>=2.51"' in err.value.hint
