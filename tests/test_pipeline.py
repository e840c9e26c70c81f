"""The embedding pipeline under abuse: resume safety, one writer per output, validate before
destroy, hostile inputs (names, loops, FIFOs, devices, huge images), shard balance, and the three
formats holding the same vectors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_photos
from imgfeat_cli import create_model
from imgfeat_cli.pipeline.embedder import collect_inputs, embed_to_memory, shard_of
from imgfeat_cli.pipeline.readers import read_features
from imgfeat_cli.pipeline.sinks import FileSink


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_photos(tmp_path / "photos", [(40, 50)] * 7, seed=3)


def _embed(invoke, *args):
    return invoke("embed", *[str(a) for a in args])


def test_three_formats_hold_identical_vectors(invoke, photos, model_dir, tmp_path):
    tables = {}
    for fmt in ("jsonl", "npy", "parquet"):
        res = _embed(invoke, photos, "--model-dir", model_dir, "--out", tmp_path / f"f.{fmt}", "-b", 3, "-q")
        assert res.exit_code == 0, res.output
        tables[fmt] = read_features(str(tmp_path / f"f.{fmt}"))
    for fmt in ("npy", "parquet"):
        assert tables[fmt].paths == tables["jsonl"].paths
        np.testing.assert_array_equal(tables[fmt].features, tables["jsonl"].features)
    import pyarrow.parquet as pq
    meta = json.loads(pq.read_schema(tmp_path / "f.parquet").metadata[b"imgfeat"])
    assert meta["dim"] == 512 and meta["dtype"] == "float32" and meta["model"]["name"] == "PP-ShiTuV2_rec"


def test_resume_refuses_a_damaged_line_and_touches_nothing(invoke, photos, model_dir, tmp_path):
    out = tmp_path / "f.jsonl"
    assert _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "-q").exit_code == 0
    lines = out.read_text().splitlines(keepends=True)
    lines[2] = "garbage\n"
    out.write_text("".join(lines))
    before = out.read_bytes()
    res = _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "--resume")
    assert res.exit_code == 2 and "line 3 is damaged" in res.stderr and "Traceback" not in res.stderr
    assert out.read_bytes() == before and not (tmp_path / "f.jsonl.part").exists()


def test_resume_with_other_settings_is_refused(invoke, photos, model_dir, built_models, tmp_path):
    out = tmp_path / "f.npy"
    assert _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "-q").exit_code == 0
    before = out.read_bytes()
    res = _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "--resume", "--fp16")
    assert res.exit_code == 2 and "dtype float32" in res.stderr and "float16" in res.stderr
    other = _embed(invoke, photos, "--model-dir", built_models["PP-ShiTuV2_rec_CLIP_vit_base"], "--out", out, "--resume")
    assert other.exit_code == 2 and "it was made with model" in other.stderr
    assert out.read_bytes() == before and not np.isnan(np.load(out)).any()
    assert not (tmp_path / "f.npy.part").exists()


def test_a_second_writer_fails_at_once(invoke, photos, model_dir, tmp_path):
    out = tmp_path / "f.jsonl"
    holder = FileSink(str(out))
    holder.open({"name": "another run"})
    try:
        res = _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "--resume")
        assert res.exit_code == 2 and "another imgfeat run is writing" in res.stderr
    finally:
        holder.abandon()
    assert not out.exists() and not (tmp_path / "f.jsonl.part").exists()


def test_overwrite_keeps_the_old_output_when_nothing_new_comes(invoke, photos, model_dir, tmp_path):
    out = tmp_path / "f.jsonl"
    assert _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "-q").exit_code == 0
    before = out.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _embed(invoke, empty, "--model-dir", model_dir, "--out", out, "--overwrite", "--json")
    assert res.exit_code == 2 and "no images found" in res.stderr
    assert json.loads(res.stdout)["error"]["message"] == "no images found in the inputs"  # --json: one document
    typo = _embed(invoke, tmp_path / "phtos" / "x.jpg", "--model-dir", model_dir, "--out", out, "--overwrite")
    assert typo.exit_code == 1 and "no image could be embedded" in typo.stderr and "file not found" in typo.stderr
    none = _embed(invoke, "--model-dir", model_dir, "--out", out, "--overwrite")
    assert none.exit_code == 2 and "no inputs given" in none.stderr
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["empty", "f.jsonl",
                                                                                       "f.jsonl.config.yaml", "photos"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names")
def test_any_file_name_round_trips_or_fails_alone(invoke, photos, model_dir, tmp_path):
    src = (photos / "p0.jpg").read_bytes()
    newline = photos / "new\nline.jpg"
    newline.write_bytes(src)
    raw = os.fsencode(str(photos)) + b"/caf\xe9.jpg"  # Latin-1 bytes: not UTF-8
    with open(raw, "wb") as fh:
        fh.write(src)
    out = tmp_path / "f.jsonl"
    assert _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "-q").exit_code == 0
    names = {os.fsencode(p) for p in read_features(str(out)).paths}
    assert raw in names and os.fsencode(str(newline)) in names and len(names) == 9
    npy = tmp_path / "f.npy"
    res = _embed(invoke, photos, "--model-dir", model_dir, "--out", npy, "-q")
    assert res.exit_code == 4  # the newline name cannot live in .paths.txt: that one input fails
    assert "line break" in (tmp_path / "f.npy.errors.jsonl").read_text()
    again = _embed(invoke, photos, "--model-dir", model_dir, "--out", npy, "--resume", "--json")
    assert json.loads(again.stdout)["already_done"] == 8 and np.load(npy).shape[0] == 8  # no duplicates
    assert {os.fsencode(p) for p in read_features(str(npy)).paths} == names - {os.fsencode(str(newline))}
    pq = tmp_path / "f.parquet"
    res = _embed(invoke, photos, "--model-dir", model_dir, "--out", pq, "-q")
    assert res.exit_code == 4 and "not valid UTF-8" in (tmp_path / "f.parquet.errors.jsonl").read_text()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks")
def test_hostile_trees_and_files_are_refused_one_by_one(invoke, photos, model_dir, tmp_path):
    os.symlink(photos, photos / "loop")  # a folder that contains itself
    os.mkfifo(photos / "x.jpg")  # would block forever if opened
    Image.new("1", (20000, 20000)).save(photos / "huge.png")  # a 400 MP image in a few KB
    out = tmp_path / "f.jsonl"
    args = [photos, "/dev/zero", "--model-dir", model_dir, "--out", out, "--json"]
    proc = subprocess.run([sys.executable, "-m", "imgfeat_cli", "embed", *map(str, args)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 4, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["embedded"] == 7 and doc["failed"] == 3
    errors = {Path(e["input_path"]).name: e["error"] for e in map(json.loads, (tmp_path / "f.jsonl.errors.jsonl").read_text().splitlines())}
    assert "FIFO" in errors["x.jpg"] and "device" in errors["zero"] and "MP limit" in errors["huge.png"]
    # the one warning is exit 4's own line: no library warning (PIL's bomb warning, ...) leaks
    assert [ln for ln in proc.stderr.splitlines() if "Warning" in ln] == \
        [f"Warning: 3 of 10 inputs were skipped; all reasons in {out}.errors.jsonl"]
    assert "Traceback" not in proc.stderr


def test_pixel_and_byte_limits_come_from_config(invoke, photos, model_dir, tmp_path):
    out = tmp_path / "f.jsonl"
    res = _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "-o", "Predict.max_image_pixels=1000")
    assert res.exit_code == 1 and "over the 0 MP limit" in res.stderr
    res = _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "-o", "Predict.max_file_mb=0")
    assert res.exit_code == 2 and "Predict.max_file_mb" in res.stderr


def test_shards_are_balanced_for_any_naming(tmp_path):
    paths = [f"imgs20/{i}.jpg" for i in range(7)]
    assert len({shard_of(p, 2) for p in paths}) == 2  # CRC-32 put all seven in one shard
    counts = np.bincount([shard_of(f"data/img_{i:05d}.jpg", 16) for i in range(4000)], minlength=16)
    assert counts.min() > 180 and counts.max() < 320  # 250 expected; a linear hash pairs shards up
    folder = make_photos(tmp_path / "p", [(8, 8)] * 20, seed=0)
    parts = [collect_inputs([str(folder)], (i, 3)) for i in range(3)]
    assert sorted(it.input_path for part in parts for it in part) == sorted(str(p) for p in folder.glob("*.jpg"))


def test_non_finite_features_are_never_written(photos, model_dir, tmp_path):
    model = create_model(model_dir=model_dir)
    real = model.embed_batch

    def broken(batch):
        out = real(batch)
        out[0] = np.nan
        return out

    model.embed_batch = broken
    got = embed_to_memory(model, str(photos), batch_size=4)
    assert len(got.paths) == 5 and np.isfinite(got.features).all()
    assert len(got.errors) == 2 and "non-finite" in got.errors[0][1]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_with_streams_is_one_line(model_dir, tmp_path):
    photos = make_photos(tmp_path / "many", [(64, 64)] * 400, seed=4)
    out = tmp_path / "f.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "imgfeat_cli", "embed", str(photos), "--model-dir", model_dir,
                             "--out", str(out), "--streams", "2", "-b", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "f.jsonl.part").exists() or (tmp_path / "f.jsonl.part").stat().st_size == 0:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    time.sleep(1.0)  # the workers are up and embedding
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the whole process group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "C++" not in stderr and "SIGTERM" not in stderr
    assert [ln for ln in stderr.splitlines() if ln.startswith("Error:")] == [
        f"Error: interrupted; partial output kept in {out}.part"]
    res = subprocess.run([sys.executable, "-m", "imgfeat_cli", "embed", str(photos), "--model-dir", model_dir,
                          "--out", str(out), "--resume", "--json"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and json.loads(res.stdout)["total"] == 400
    assert len(read_features(str(out)).paths) == 400 == len(set(read_features(str(out)).paths))


def test_predict_can_show_a_progress_bar(photos, model_dir, capsys):
    model = create_model(model_dir=model_dir)
    quiet = list(model.predict(str(photos), batch_size=3))
    assert capsys.readouterr().err == ""
    shown = list(model.predict(str(photos), batch_size=3, progress=True))
    err = capsys.readouterr().err
    assert "predict" in err and "7/7" in err
    assert [r["res"]["input_path"] for r in shown] == [r["res"]["input_path"] for r in quiet]


def test_a_full_disk_while_publishing_keeps_the_part_for_resume(invoke, photos, model_dir, tmp_path, monkeypatch):
    import errno
    from imgfeat_cli.pipeline import arrayparts as formats
    out = tmp_path / "f.npy"
    real = formats.shutil.copyfileobj

    def full(src, dst, *a):  # the disk fills up while the final .npy is staged
        dst.write(b"x" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(formats.shutil, "copyfileobj", full)
    res = _embed(invoke, photos, "--model-dir", model_dir, "--out", out)
    assert res.exit_code == 1 and f"no space left on the device holding {out}" in res.stderr
    assert "Traceback" not in res.stderr and not out.exists()
    assert sorted(p.name for p in tmp_path.glob("f.*")) == ["f.npy.part", "f.npy.part.meta.json", "f.paths.txt.part"]
    monkeypatch.setattr(formats.shutil, "copyfileobj", real)
    again = _embed(invoke, photos, "--model-dir", model_dir, "--out", out, "--resume", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["already_done"] == 7
    assert np.load(out).shape == (7, 512)
