"""`imgfeat embed` and `imgfeat export` through the CLI: formats, resume, shards, failures."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import make_photos, shared_path
from imgfeat_cli import create_model


@pytest.fixture
def photos(tmp_path) -> Path:
    return make_photos(tmp_path / "photos", [(40 + i, 50) for i in range(7)], seed=1, subdir_odd=True)


def _jsonl(path: Path) -> dict:
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    return {r["input_path"]: np.array(r["feature"], dtype=np.float32) for r in rows}


def test_embed_jsonl_matches_api_and_npy(invoke, photos, model_dir, tmp_path):
    out = tmp_path / "f.jsonl"
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", out, "--batch-size", 3, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["embedded"] == 7 and summary["failed"] == 0 and summary["format"] == "jsonl"
    feats = _jsonl(out)
    assert len(feats) == 7 and not (tmp_path / "f.jsonl.part").exists()
    api = {r["res"]["input_path"]: r["res"]["feature"] for r in create_model(model_dir=model_dir).predict(str(photos))}
    assert set(api) == set(feats)
    for k in feats:  # JSON floats read back to the identical float32 the model produced (batching aside)
        np.testing.assert_allclose(feats[k], api[k], atol=1e-6)
    npy = tmp_path / "f.npy"
    assert invoke("embed", photos, "--model-dir", model_dir, "--out", npy, "-b", 3, "-q").exit_code == 0
    arr = np.load(npy)
    paths = (tmp_path / "f.paths.txt").read_text().splitlines()
    assert arr.shape == (7, 512) and arr.dtype == np.float32
    for p, row in zip(paths, arr):
        np.testing.assert_array_equal(row, feats[p])  # same batches -> bit-identical
    assert (tmp_path / "f.jsonl.config.yaml").is_file()


@pytest.mark.parametrize("fmt", ["jsonl", "npy", "parquet"])
def test_floats_round_trip_exactly(tmp_path, fmt):
    from imgfeat_cli.pipeline.readers import read_features
    from imgfeat_cli.pipeline.sinks import FileSink
    feats = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    for fp16 in (False, True):
        sink = FileSink(str(tmp_path / f"x{int(fp16)}.{fmt}"), fp16=fp16)
        sink.open({"name": "test"})
        sink.write(["a", "b", "c"], feats)
        sink.finish([])
        back = read_features(str(tmp_path / f"x{int(fp16)}.{fmt}"))
        assert back.paths == ["a", "b", "c"]
        want = feats.astype(np.float16) if fp16 else feats
        np.testing.assert_array_equal(back.features.astype(want.dtype), want)


def test_embed_records_bad_files_and_exit_codes(invoke, photos, model_dir, tmp_path):
    (photos / "broken.jpg").write_bytes((photos / "p0.jpg").read_bytes()[:300])
    (photos / "empty.png").write_bytes(b"")
    out = tmp_path / "f.jsonl"
    res = invoke("embed", photos, str(tmp_path / "missing.jpg"), "--model-dir", model_dir, "--out", out)
    assert res.exit_code == 4
    # exit 4 is a warning with the reasons, not an error: the first few and where all of them are
    assert "Error:" not in res.stderr
    assert f"Warning: 3 of 10 inputs were skipped; all reasons in {out}.errors.jsonl" in res.stderr
    assert "zero-byte file" in res.stderr and "missing.jpg: file not found" in res.stderr
    as_json = invoke("embed", photos, str(tmp_path / "missing.jpg"), "--model-dir", model_dir, "--out",
                     tmp_path / "j.jsonl", "--json")
    assert as_json.exit_code == 4
    doc = json.loads(as_json.stdout)
    assert doc["failed"] == 3 and {Path(e["input_path"]).name for e in doc["errors"]} == \
        {"broken.jpg", "empty.png", "missing.jpg"}
    errors = {Path(e["input_path"]).name: e["error"] for e in map(json.loads, (tmp_path / "f.jsonl.errors.jsonl").read_text().splitlines())}
    assert set(errors) == {"broken.jpg", "empty.png", "missing.jpg"}
    assert "truncated" in errors["broken.jpg"] and "zero-byte" in errors["empty.png"]
    assert "file not found" in errors["missing.jpg"]
    assert len(_jsonl(out)) == 7
    bad_only = invoke("embed", photos / "broken.jpg", "--model-dir", model_dir, "--out", tmp_path / "g.jsonl")
    assert bad_only.exit_code == 1 and "no image could be embedded" in bad_only.stderr
    nothing = invoke("embed", tmp_path / "emptydir_missing", "--model-dir", model_dir, "--out", tmp_path / "h.jsonl")
    assert nothing.exit_code == 1


@pytest.mark.parametrize("fmt", ["jsonl", "npy"])
def test_resume_after_interrupt_has_no_duplicates(photos, model_dir, tmp_path, fmt, invoke):
    from imgfeat_cli import embed as run_embed
    from imgfeat_cli.common.errors import Interrupted
    model = create_model(model_dir=model_dir)
    out = tmp_path / f"f.{fmt}"
    calls = {"n": 0}

    def stop_after_two_batches() -> bool:
        calls["n"] += 1
        return calls["n"] >= 5  # checked once per decoded image: stop mid-run

    with pytest.raises(Interrupted, match="partial output kept"):
        run_embed([str(photos)], str(out), model, batch_size=2, stop=stop_after_two_batches)
    assert not out.exists() and (tmp_path / f"f.{fmt}.part").exists()
    if fmt == "jsonl":  # a torn last record is cut off on resume
        with open(tmp_path / "f.jsonl.part", "a") as fh:
            fh.write('{"input_path": "torn", "feat')
    again = invoke("embed", photos, "--model-dir", model_dir, "--out", out, "-b", 2)
    assert again.exit_code == 2 and "interrupted run left" in again.stderr and "--resume" in again.stderr
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", out, "-b", 2, "--resume", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["already_done"] == 4 and doc["embedded"] == 3
    full = tmp_path / f"full.{fmt}"
    assert invoke("embed", photos, "--model-dir", model_dir, "--out", full, "-b", 2, "-q").exit_code == 0
    if fmt == "jsonl":
        got, ref = _jsonl(out), _jsonl(full)
        assert len(out.read_text().splitlines()) == 7
    else:
        got = dict(zip((tmp_path / "f.paths.txt").read_text().splitlines(), np.load(out)))
        ref = dict(zip((tmp_path / "full.paths.txt").read_text().splitlines(), np.load(full)))
        assert np.load(out).shape == (7, 512)
    assert set(got) == set(ref)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], atol=1e-6)
    # resuming a finished output is a no-op that keeps everything
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", out, "--resume", "--json")
    assert json.loads(res.stdout)["already_done"] == 7


def test_existing_output_needs_resume_or_overwrite(invoke, photos, model_dir, tmp_path):
    out = tmp_path / "f.jsonl"
    assert invoke("embed", photos, "--model-dir", model_dir, "--out", out, "-q").exit_code == 0
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", out)
    assert res.exit_code == 2 and "already exists" in res.stderr
    assert invoke("embed", photos, "--model-dir", model_dir, "--out", out, "--overwrite", "-q").exit_code == 0


def test_shards_partition_inputs_and_stdin(invoke, photos, model_dir, tmp_path):
    seen = []
    for i in range(3):
        out = tmp_path / f"s{i}.jsonl"
        res = invoke("embed", photos, "--model-dir", model_dir, "--out", out, "--shard", f"{i}/3", "-q")
        assert res.exit_code in (0, 2), res.output
        if out.exists():
            seen += list(_jsonl(out))
    assert sorted(seen) == sorted(str(p) for p in photos.rglob("*.jpg"))
    listing = "\n".join(str(p) for p in sorted(photos.rglob("*.jpg"))[:3]) + "\n"
    res = invoke("embed", "-", "--model-dir", model_dir, "--out", tmp_path / "stdin.jsonl", "--json", input=listing)
    assert res.exit_code == 0 and json.loads(res.stdout)["embedded"] == 3
    bad = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "x.jsonl", "--shard", "3/3")
    assert bad.exit_code == 2 and "need 0 <= I < N" in bad.stderr


def test_embed_usage_errors(invoke, photos, model_dir, tmp_path, monkeypatch):
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "f.csv")
    assert res.exit_code == 2 and "cannot tell the output format" in res.stderr
    res = invoke("embed", photos, "--out", tmp_path / "f.jsonl", "-o", "Predict.batch_sise=4")
    assert res.exit_code == 2 and "did you mean Predict.batch_size?" in res.stderr
    monkeypatch.setenv("IMGFEAT_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("IMGFEAT_OFFLINE", "1")
    res = invoke("embed", photos, "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 1
    assert "not in the cache" in res.stderr and "--model-dir" in res.stderr and "--weights" in res.stderr


def test_export_cli_then_embed(invoke, photos, tmp_path):
    d = shared_path("fixtures", "ppshituv2_rec_seed0")
    out = tmp_path / "inf"
    res = invoke("export", "--weights", d / "checkpoint.pdparams", "--out", out, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["model_name"] == "PP-ShiTuV2_rec"
    again = invoke("export", "--weights", d / "checkpoint.pdparams", "--out", out)
    assert again.exit_code == 2 and "exists and is not empty" in again.stderr
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert invoke("embed", photos, "--model-dir", out, "--out", a, "-q").exit_code == 0
    assert invoke("embed", photos, "--weights", d / "checkpoint.pdparams", "--out", b, "-q").exit_code == 0
    fa, fb = _jsonl(a), _jsonl(b)
    for k in fa:  # exported program and dygraph checkpoint agree
        assert float(fa[k] @ fb[k]) > 0.99999
    missing = invoke("export", "--weights", tmp_path / "none.pdparams", "--out", tmp_path / "x")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr  # a path naming no file: usage


@pytest.mark.slow
def test_embed_drink_gallery_subset(invoke, model_dir, tmp_path):
    """Real-world files: RGBA PNGs named .jpg and a WebP named .jpg embed like any other image."""
    src = shared_path("data", "drink_dataset_v1.0")
    folder = tmp_path / "drink"
    for cls in ("0", "1", "2", "100"):
        shutil.copytree(src / "gallery" / cls, folder / cls)
    shutil.copy(src / "test_images" / "99.jpg", folder / "webp_named.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    out = tmp_path / "d.jsonl"
    res = invoke("embed", folder, "--model-dir", model_dir, "--out", out, "--json")
    doc = json.loads(res.stdout)
    assert res.exit_code == 4 and doc["failed"] == 1
    n_images = len([p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".jpeg")])
    assert doc["embedded"] == n_images - 1
    assert "corrupt.jpg" in (tmp_path / "d.jsonl.errors.jsonl").read_text()


def _damaged_copy(model_dir: str, tmp_path: Path, how: str) -> Path:
    """A copy of the model folder with one file damaged as a disk, a copy or a download can."""
    folder = tmp_path / f"model-{how}"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns(".imgfeat"))
    params, program = folder / "inference.pdiparams", folder / "inference.json"
    if how.startswith("flip"):  # a bit flipped in a tensor header: paddle2onnx aborted (exit 134)
        data = bytearray(params.read_bytes())
        data[int(how[4:])] ^= 0x40
        params.write_bytes(bytes(data))
    elif how == "truncated-json":  # paddle2onnx exited 255
        program.write_bytes(program.read_bytes()[:len(program.read_bytes()) // 2])
    elif how == "truncated-params":
        params.write_bytes(params.read_bytes()[:-1000])
    elif how == "empty-params":
        params.write_bytes(b"")
    elif how == "extra-bytes":
        params.write_bytes(params.read_bytes() + b"\0" * 8)
    return folder


@pytest.mark.parametrize("how", ["flip16", "flip19", "flip23", "truncated-json", "truncated-params", "empty-params",
                                 "extra-bytes"])
def test_damaged_model_files_are_one_line_errors(invoke, photos, model_dir, tmp_path, how):
    """Model files are checked before paddle, paddle2onnx or onnxruntime read them: one line
    naming the folder and the file, exit 1, never a native abort (134) or 255."""
    folder = _damaged_copy(model_dir, tmp_path, how)
    res = invoke("embed", photos, "--model-dir", folder, "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 1, (res.exit_code, res.stderr)
    error = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(error) == 1 and str(folder) in error[0], res.stderr
    assert ("inference.json" if how == "truncated-json" else "inference.pdiparams") in error[0]
    assert "re-export" in res.stderr and not (tmp_path / "f.jsonl").exists()


def test_a_conversion_that_crashes_falls_back_to_paddle(invoke, photos, model_dir, tmp_path, monkeypatch):
    """paddle2onnx runs in a child process: when it aborts (as it does on programs it cannot read)
    embed says why in one line and runs paddle, as documented."""
    import imgfeat_cli.models.onnx as onnx

    monkeypatch.setattr(onnx, "_CONVERT", "import os\nos.abort()\n")
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns(".imgfeat"))
    res = invoke("embed", photos, "--model-dir", folder, "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 0, res.stderr
    assert "paddle2onnx crashed (SIGABRT); running paddle instead" in res.stderr
    assert ": paddle-inference" in res.stderr
    assert not list(folder.rglob("*.part")) and not list(folder.rglob("*.onnx"))
    res = invoke("embed", photos, "--model-dir", folder, "--out", tmp_path / "g.jsonl", "--backend", "onnxruntime")
    assert res.exit_code == 1 and "paddle2onnx crashed (SIGABRT)" in res.stderr and "Traceback" not in res.stderr


#: The console script with SIGINT sent by another process DELAY seconds after paddle's extension
#: module starts to load (the 0.7-0.9 s window of `imgfeat embed` on the development machine): a
#: KeyboardInterrupt raised inside its initialisation came out as "ImportError: initialization
#: failed" (exit 1, "unexpected"). The sender is another process because a thread of this one
#: cannot run while the extension's initialisation holds the interpreter.
SIGINT_IN_PADDLE_IMPORT = """
import os, subprocess, sys
DELAY = sys.argv.pop(1)
class Hook:
    def find_spec(self, name, path=None, target=None):
        if name == "paddle.base.libpaddle":
            subprocess.Popen(["sh", "-c", f"sleep {DELAY}; kill -INT {os.getpid()}"])
        return None
sys.argv = ["imgfeat"] + sys.argv[1:]
from imgfeat_cli.cli.entry import main
sys.meta_path.insert(0, Hook())
main()
"""


def _run_embed(args, **kw):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "PYTHONPATH": str(repo)}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(repo), env=env, **kw)


def _one_interrupt_line(code, stderr):
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert code == 130, (code, stderr)
    assert len(errors) == 1 and errors[0].startswith("Error: interrupted"), stderr
    assert "unexpected" not in stderr and "Can not import paddle core" not in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("delay", ["0", "0.1", "0.25"])
def test_ctrl_c_while_paddle_imports_is_one_line_exit_130(photos, model_dir, tmp_path, delay):
    proc = _run_embed(["-c", SIGINT_IN_PADDLE_IMPORT, delay, "embed", str(photos), "--model-dir", model_dir,
                       "--backend", "paddle", "--out", str(tmp_path / "f.jsonl")])
    out, err = proc.communicate(timeout=300)
    _one_interrupt_line(proc.returncode, err)
    assert not (tmp_path / "f.jsonl").exists()


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_start_up_is_one_line_exit_130(photos, model_dir, tmp_path):
    """SIGINT at several delays after start: whatever is being imported or loaded, exit 130 and
    one Error line (a run that finished first is fine)."""
    import signal
    import time

    for i, delay in enumerate((0.3, 0.7, 0.9, 1.2, 1.6, 2.2)):
        out_file = tmp_path / f"f{i}.jsonl"
        proc = _run_embed(["-m", "imgfeat_cli", "embed", str(photos), "--model-dir", model_dir, "--out",
                           str(out_file)])
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        if proc.returncode == 0 and out_file.exists():
            continue
        _one_interrupt_line(proc.returncode, err)


def test_more_threads_than_cores_are_lowered_to_the_cores(invoke, photos, model_dir, tmp_path, monkeypatch):
    """--threads 10000 sat in engine selection for minutes: a thread count beyond the cores this
    process may use is lowered to them, with a one-line warning (the same rule for --workers)."""
    from imgfeat_cli.common.system import cpu_count
    from imgfeat_cli.models.source import ModelSource

    asked = {}

    def spy(self, *args, **kwargs):
        asked["threads"] = self.threads
        raise KeyboardInterrupt  # what the model would be loaded with is all this test needs

    monkeypatch.setattr(ModelSource, "load", spy)
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "f.jsonl", "--threads", "10000",
                 "--workers", "5000")
    assert res.exit_code == 130 and asked["threads"] == cpu_count()
    assert f"Warning: --threads 10000 is more than the {cpu_count()} cores this process may use: using " \
           f"{cpu_count()}" in res.stderr
    assert "Warning: --workers 5000 is more than" in res.stderr


@pytest.mark.parametrize("how", ["--device gpu", "--device gpu:1 --backend paddle", "config"])
def test_gpus_this_machine_lacks_are_named_not_an_accuracy_bar(invoke, photos, model_dir, tmp_path, how):
    """PaddleX's own configs say device: gpu:0,1,2,3; on a CPU build of paddle that ended in "no
    engine met the accuracy bar" (exit 1)."""
    import paddle

    from imgfeat_cli.models.onnx import onnxruntime_gpu_available

    if paddle.device.is_compiled_with_cuda() or onnxruntime_gpu_available():
        pytest.skip("this machine's engines can use GPUs")
    if how == "config":
        (tmp_path / "px.yaml").write_text("Global:\n  device: gpu:0,1,2,3\n")
        args = ["-c", str(tmp_path / "px.yaml")]
    else:
        args = how.split()
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "f.jsonl", *args)
    assert res.exit_code == 2, res.stderr
    error, hint = [ln for ln in res.stderr.splitlines() if ln.startswith(("Error:", "Hint:"))]
    assert "asks for" in error and "no CUDA support" in error and "accuracy bar" not in res.stderr
    assert "--device cpu" in hint


def test_a_jpeg_with_corrupt_data_is_embedded_and_named(invoke, photos, model_dir, tmp_path):
    """libjpeg printed "Corrupt JPEG data: 226 extraneous bytes before marker 0xd9" with no file
    name. Decided: the image is embedded as PaddleX's cv2.imread decodes it, and the warning names
    the file (one line, on stderr; none with --quiet)."""
    good = sorted(photos.rglob("*.jpg"))[0].read_bytes()
    bad = bytearray(good)
    for i in range(len(bad) // 2, len(bad) // 2 + 40):
        bad[i] ^= 0x55
    corrupt = photos / "corrupt.jpg"
    corrupt.write_bytes(bytes(bad))
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "Corrupt JPEG data" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"Warning: {corrupt}: Corrupt JPEG data: "), lines
    assert lines[0].endswith("(decoded as PaddleX decodes it)")
    assert str(corrupt) in _jsonl(tmp_path / "f.jsonl")
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "g.jsonl", "-q")
    assert res.exit_code == 0 and "Corrupt JPEG" not in res.stderr


def test_an_empty_shard_is_a_usage_error(invoke, photos, model_dir, tmp_path):
    """--shard "$SLURM_ARRAY_TASK_ID/32" with the variable unset gives --shard '/32'; an unset
    whole value gives --shard '': it embedded every input (each task the whole job)."""
    for shard in ("", "/32", " "):
        res = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "f.jsonl", "--shard", shard)
        assert res.exit_code == 2 and "bad --shard" in res.stderr, (shard, res.stderr)
    assert not (tmp_path / "f.jsonl").exists()


def test_a_stdin_list_starting_with_a_bom_is_read(invoke, photos, model_dir, tmp_path):
    """Windows editors and PowerShell start a UTF-8 list with a byte order mark: it failed with
    "file not found: \\ufeff/path"."""
    paths = [str(p) for p in sorted(photos.rglob("*.jpg"))[:3]]
    res = invoke("embed", "-", "--model-dir", model_dir, "--out", tmp_path / "f.jsonl", "--json",
                 input="\ufeff" + "\r\n".join(paths) + "\r\n")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["embedded"] == 3 and sorted(_jsonl(tmp_path / "f.jsonl")) == paths


@pytest.mark.parametrize("sub", ["", "nested"])
def test_imgfeat_home_that_is_a_file_is_refused_with_model_dir_too(invoke, photos, model_dir, tmp_path, monkeypatch,
                                                                    sub):
    """It was ignored with --model-dir (the cache holds engine decisions and converted graphs)."""
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("IMGFEAT_HOME", str(home / sub) if sub else str(home))
    res = invoke("embed", photos, "--model-dir", model_dir, "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 2, res.stderr
    assert "\nError: IMGFEAT_HOME=" in res.stderr and "is not a writable folder" in res.stderr
    assert not (tmp_path / "f.jsonl").exists()


@pytest.mark.parametrize("what", ["a file", "missing"])
def test_a_model_dir_that_is_a_file_or_missing_is_exit_2(invoke, photos, model_dir, tmp_path, what):
    """README: a path of the wrong kind is a usage error (exit 2); it was exit 1."""
    path = Path(model_dir) / "inference.yml" if what == "a file" else tmp_path / "no-model"
    res = invoke("embed", photos, "--model-dir", path, "--out", tmp_path / "f.jsonl")
    assert res.exit_code == 2, res.stderr
    assert ("is a file, not a folder" if what == "a file" else "does not exist") in res.stderr
