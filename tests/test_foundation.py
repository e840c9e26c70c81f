"""Package conventions: import hygiene, fast --help/--version, config layering and its errors."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from imgfeat_cli import __version__
from imgfeat_cli.common import config


def _py(code: str, **env: str) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


#: Every package below the command line (the floors themselves are checked statement by statement
#: in test_layers.py; this checks what importing them really loads, third-party packages included).
BELOW_CLI = sorted(p.name for p in (Path(__file__).parents[1] / "imgfeat_cli").iterdir()
                   if (p / "__init__.py").is_file() and p.name != "cli")


@pytest.mark.parametrize("package", BELOW_CLI)
def test_engines_never_load_typer_or_rich(package):
    """Import every module of one package in a fresh interpreter: no typer/rich/click came with it
    (they belong to the command line; a library user should not pay for them)."""
    res = _py(f"""
        import importlib, pkgutil, sys
        sys.modules["httpx._main"] = None  # paddle imports httpx, whose CLI pulls in click and rich when
                                           # click is installed (Ray brings it): not imgfeat's doing
        pkg = importlib.import_module("imgfeat_cli.{package}")
        for m in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"imgfeat_cli.{package}.{{m.name}}")
        import json
        ui = ('typer', 'rich') if 'uvicorn' in sys.modules else ('typer', 'rich', 'click')  # uvicorn's own CLI
        print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in ui)))
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["check", "--help"]])
def test_help_and_version_do_not_import_paddle(args):
    res = _py(f"""
        import sys
        from imgfeat_cli.cli.app import app
        try:
            app({args!r})
        except SystemExit:
            pass
        print('PADDLE' if any(n == 'paddle' or n.startswith('paddle.') for n in sys.modules) else 'CLEAN')
    """)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("CLEAN")


def test_version(invoke):
    res = invoke("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"imgfeat {__version__}"


def test_defaults_come_from_schema():
    d = config.defaults("train")
    assert d["Train"]["epochs_iters"] == 20 and d["Train"]["batch_size"] is None  # None: the recipe default
    assert d["Train"]["input_size"] == 224 and d["Train"]["warmup_steps"] == 5
    assert d["Global"]["output"] == "output"
    assert d["CheckDataset"]["split"] == {"enable": False, "train_percent": 50, "gallery_percent": 30,
                                          "query_percent": 20, "seed": 0, "stratify": True}


def test_layering_file_then_overrides_then_flags(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("Train:\n  epochs_iters: 7\n  batch_size: 16\nGlobal:\n  output: from_file\n")
    cfg = config.resolve("train", str(cfg_file), ["Train.batch_size=32", "Evaluate.recall_k=[1, 10]",
                                                   "Global.output=on"], {"Global.output": None})
    assert cfg["Train"]["epochs_iters"] == 7
    assert cfg["Train"]["batch_size"] == 32
    assert cfg["Evaluate"]["recall_k"] == [1, 10]
    # YAML would read `on` as true; a string-only key keeps the text (upstream turns it into None).
    assert cfg["Global"]["output"] == "on"
    cfg = config.resolve("train", str(cfg_file), [], {"Global.output": "flag"})
    assert cfg["Global"]["output"] == "flag"


@pytest.mark.parametrize("override,needle", [
    ("Train.epoch=3", "unknown config key Train.epoch (from -o Train.epoch=3)\nHint: did you mean Train.epochs_iters?"),
    ("Trian.batch_size=3", "unknown config key Trian"),
    ("Train.batch_size=abc", 'config key Train.batch_size (from -o Train.batch_size=abc): got "abc", expected integer >= 4 (or null)'),
    ("Train.batch_size=0", "got 0, expected integer >= 4 (or null)"),
    ("Global.device=tpu", 'got "tpu", expected string matching cpu, gpu, gpu:N'),
    ("Train.batch_size", "bad override 'Train.batch_size': expected Section.key=value"),
    ("Train.batch_size=[1, {a: 2}]", "only scalars and flat lists"),
])
def test_bad_overrides_exit_2_with_specific_message(invoke, synth_ds, override, needle):
    res = invoke("check", "--dataset", synth_ds, "-o", override)
    assert res.exit_code == 2, res.output
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout == ""


def test_typo_suggestion_names_closest_key(invoke, synth_ds):
    res = invoke("check", "--dataset", synth_ds, "-o", "Train.learnin_rate=0.1")
    assert res.exit_code == 2
    assert "did you mean Train.learning_rate?" in res.stderr


def test_bad_config_file(invoke, synth_ds, tmp_path):
    res = invoke("check", "--dataset", synth_ds, "-c", tmp_path / "missing.yaml")
    assert res.exit_code == 2 and "config file" in res.stderr and "does not exist" in res.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("Train: [unclosed\n")
    res = invoke("check", "--dataset", synth_ds, "-c", bad)
    assert res.exit_code == 2 and f"config file {bad}:" in res.stderr and "not valid YAML" in res.stderr
    bad.write_text("Train:\n  batch_size: -1\n")
    res = invoke("check", "--dataset", synth_ds, "-c", bad)
    assert res.exit_code == 2 and f"Train.batch_size (from {bad})" in res.stderr


def test_debug_env_shows_traceback(tmp_path):
    args = ["-m", "imgfeat_cli", "split", "--dataset", str(tmp_path), "--train", "90", "--gallery", "20", "--query", "10"]
    import os
    plain = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.splitlines()[0].startswith("Error: bad split percentages")
    dbg = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "IMGFEAT_DEBUG": "1"})
    assert dbg.returncode == 2 and "Traceback" in dbg.stderr


def test_resolved_config_saved_beside_outputs(invoke, synth_ds, tmp_path):
    out = tmp_path / "out"
    res = invoke("check", "--dataset", synth_ds, "--output", out, "-o", "CheckDataset.demo_samples=2", "--quiet")
    assert res.exit_code == 0, res.output
    saved = (out / "config.check.yaml").read_text()
    assert "demo_samples: 2" in saved and str(synth_ds) in saved


def test_all_schemas_are_valid_json_schema():
    from jsonschema import Draft202012Validator
    for path in config.schema_dir().glob("*.json"):
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_thread_count_ignores_what_paddle_writes_into_omp_num_threads():
    """``import paddle`` sets OMP_NUM_THREADS=1 when unset; imgfeat must not take that for the
    user's setting (every runner would run one thread), but must honour a value the user set."""
    import os
    code = """
        import os, imgfeat_cli, paddle
        from imgfeat_cli.common.system import cpu_count
        print(os.environ.get("OMP_NUM_THREADS"), cpu_count(), len(os.sched_getaffinity(0)))
    """
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         timeout=120)
    omp, count, cores = res.stdout.split()
    assert omp == "1" and count == cores  # paddle wrote 1; imgfeat still uses every core it may
    res = _py(code, OMP_NUM_THREADS="3")
    assert res.stdout.split()[:2] == ["3", "3"]
