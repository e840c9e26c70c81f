"""Configuration against hostile and foreign input (issue 12): YAML bombs, huge echoed values,
NaN/inf, files that are not YAML text, and PaddleX's own module config files."""
from __future__ import annotations

import os
import re

import pytest

from imgfeat_cli.common import config
from imgfeat_cli.common.errors import ConfigError
from test_ordinary_errors import error_lines

#: The content of ``paddlex/configs/modules/image_feature/PP-ShiTuV2_rec.yaml`` as shipped in the
#: ``paddlex`` wheel (3.0.0b2 to 3.7.2 ship it unchanged), copied here so the test needs no paddlex.
PADDLEX_SHITU_REC = """\
Global:
  model: PP-ShiTuV2_rec
  mode: check_dataset # check_dataset/train/evaluate/predict
  dataset_dir: "/paddle/dataset/paddlex/shitu_rec/Inshop_examples"
  device: gpu:0,1,2,3
  output: "output"

CheckDataset:
  convert: 
    enable: False
    src_dataset_type: null
  split: 
    enable: False
    train_percent: null
    gallery_percent: null
    query_percent: null

Train:
  num_classes: 159
  epochs_iters: 20
  batch_size: 128
  learning_rate: 0.01
  pretrain_weight_path: https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/PP-ShiTuV2_rec_pretrained.pdparams
  warmup_steps: 5
  resume_path: null
  log_interval: 1
  eval_interval: 1
  save_interval: 1

Evaluate:
  weight_path: "output/best_model/best_model.pdparams"
  log_interval: 1

Export:
  weight_path: https://paddle-model-ecology.bj.bcebos.com/paddlex/official_pretrained_model/PP-ShiTuV2_rec_pretrained.pdparams

Predict:
  batch_size: 1
  model_dir: "output/best_model/inference"
  input: "https://paddle-model-ecology.bj.bcebos.com/paddlex/imgs/demo_image/general_image_recognition_001.jpg"
  kernel_option:
    run_mode: paddle
"""

#: Keys other PaddleX versions and modules put in module configs (3.0 beta: Global.module and the
#: face-recognition recipe; classification's val_percent; trainer switches read with .get()).
OTHER_PADDLEX_KEYS = """\
Global:
  module: general_recognition
  export_with_pir: true
CheckDataset:
  split:
    val_percent: 20
Train:
  dy2st: false
  amp: O1
  uniform_output_enabled: true
  arcmargin_m: 0.2
  feature_dim: 512
Evaluate:
  batch_size: 64
Export:
  input_shape: [1, 3, 224, 224]
"""


@pytest.mark.parametrize("command", ["check", "train", "embed", "eval", "export"])
def test_paddlex_module_config_is_accepted_with_a_note(tmp_path, command):
    path = tmp_path / "PP-ShiTuV2_rec.yaml"
    path.write_text(PADDLEX_SHITU_REC)
    notes: list = []
    cfg = config.resolve(command, str(path), note=notes.append)
    assert cfg["Global"]["dataset_dir"] == "/paddle/dataset/paddlex/shitu_rec/Inshop_examples"
    assert cfg["Train"]["num_classes"] == 159 and cfg["Predict"]["batch_size"] == 1
    # PaddleX's null means "not set": the defaults apply
    assert [cfg["CheckDataset"]["split"][k] for k in ("train_percent", "gallery_percent", "query_percent")] == [50, 30, 20]
    assert len(notes) == 1 and "Predict.kernel_option" in notes[0] and "not used" in notes[0]


def test_keys_of_other_paddlex_versions_are_noted_not_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(OTHER_PADDLEX_KEYS)
    notes: list = []
    cfg = config.resolve("train", str(path), ["Predict.kernel_option.run_mode=paddle"], note=notes.append)
    for key in ("Global.module", "Global.export_with_pir", "CheckDataset.split.val_percent", "Train.dy2st",
                "Train.amp", "Train.uniform_output_enabled", "Train.arcmargin_m", "Train.feature_dim",
                "Evaluate.batch_size", "Export.input_shape", "Predict.kernel_option"):
        assert key in notes[0], key
    assert cfg["Train"]["epochs_iters"] == 20  # the rest resolves as usual
    # unused keys are neither defaults nor suggestions
    assert "kernel_option" not in config.defaults("embed")["Predict"]
    assert "Train.dy2st" not in config.all_key_paths("train")


@pytest.mark.parametrize("override,suggestion", [
    ("Train.epoch=3", "Train.epochs_iters"),
    ("Train.learning_rat=0.1", "Train.learning_rate"),
    ("Predict.kernel_options.run_mode=paddle", "Predict."),
    ("Globall.device=cpu", "Global"),
])
def test_real_typos_still_get_did_you_mean(override, suggestion):
    with pytest.raises(ConfigError) as info:
        config.resolve("train", None, [override], note=lambda _: None)
    assert "unknown config key" in info.value.message and suggestion in (info.value.hint or "")


def test_the_note_is_printed_on_stderr_and_quiet_hides_it(invoke, tmp_path):
    path = tmp_path / "PP-ShiTuV2_rec.yaml"
    path.write_text(PADDLEX_SHITU_REC)
    res = invoke("check", "-c", path, "--dataset", tmp_path / "nope")
    assert "Note: accepted but not used by imgfeat (PaddleX keys): Predict.kernel_option" in res.stderr
    assert "unknown config key" not in res.stderr
    res = invoke("check", "-c", path, "--dataset", tmp_path / "nope", "--quiet")
    assert "Note:" not in res.stderr


LAUGHS = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
                 for p, c in zip([""] + list("abcdefg"), "abcdefgh"))


@pytest.mark.parametrize("where", ["top", "known key", "unknown key"])
def test_yaml_alias_bomb_is_refused_before_it_expands(invoke, tmp_path, where):
    body = {"top": LAUGHS, "known key": LAUGHS.replace("h: &h", "Global:\n  output: &h"),
            "unknown key": LAUGHS.replace("h: &h", "Train:\n  epoch: &h")}[where]
    path = tmp_path / "bomb.yaml"
    path.write_text(body)
    res = invoke("check", "-c", path, "--dataset", tmp_path)
    assert res.exit_code == 2
    assert "aliases expand to more than" in error_lines(res)[0] and len(res.stderr) < 500


@pytest.mark.parametrize("override,code", [
    ("Global.output=" + "x" * 100_000, 2),        # valid config; the folder name is too long
    ("Train.epochs_iters=" + "y" * 100_000, 2),   # the wrong type
    ("Train." + "k" * 100_000 + "=1", 2),         # an unknown key
    ("z" * 100_000, 2),                           # no '='
    ("Train.epochs_iters=" + "9" * 100_000, 2),   # an integer too long to convert
])
def test_huge_values_are_cut_when_echoed(invoke, tmp_path, override, code):
    res = invoke("check", "--dataset", tmp_path, "-o", override)
    assert res.exit_code == code and len(res.stderr) < 1000, (res.exit_code, len(res.stderr))
    error_lines(res)


@pytest.mark.parametrize("override,key", [
    ("Train.learning_rate=.nan", "Train.learning_rate"),
    ("Train.learning_rate=.inf", "Train.learning_rate"),
    ("Train.learning_rate=-.inf", "Train.learning_rate"),
    ("CheckDataset.split.train_percent=.NaN", "CheckDataset.split.train_percent"),
    ("Evaluate.recall_k=[1, .inf]", "Evaluate.recall_k.1"),
    ("Download.timeout=1.0e+999", "Download.timeout"),  # YAML 1.1 reads it as inf
])
def test_non_finite_numbers_are_refused_with_the_key(override, key):
    name = "download" if override.startswith("Download") else "train"
    with pytest.raises(ConfigError) as info:
        config.resolve(name, None, [override])
    assert info.value.message.startswith(f"config key {key} (from -o ") and "finite" in info.value.message


@pytest.mark.parametrize("body,expected", [
    ("Train:\n  learning_rate: .nan\n", "Train.learning_rate (from {path}): got nan, expected a finite number"),
    ("Train:\n  batch_size: -.inf\n", "Train.batch_size (from {path}): got -inf, expected a finite number"),
    ("Global:\n  output: .inf\n", "Global.output (from {path}): got inf, expected string"),
])
def test_non_finite_numbers_in_a_file_name_the_file(tmp_path, body, expected):
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=re.escape(expected.format(path=path))):
        config.resolve("train", str(path))


@pytest.mark.parametrize("value,command,option", [
    ("out.jsonl", "embed", "--out/-O"),
    ("feats/out.npy", "embed", "--out/-O"),
    ("report", "check", "--out/-O"),
    ("runs/exp1", "train", "--out/-O"),
])
def test_dash_o_with_a_file_name_suggests_the_output_option(invoke, tmp_path, value, command, option):
    args = [command, "-o", value] + (["--dataset", tmp_path] if command != "embed" else [tmp_path])
    res = invoke(*args)
    assert res.exit_code == 2
    lines = error_lines(res)
    # embed's --out is required: its absence is the error, and the hint names the slip
    first = "missing option '--out'" if command == "embed" else f"bad override {value!r}"
    assert first in lines[0] and f"did you mean {option}" in lines[1]


def test_dash_o_key_without_value_says_so():
    with pytest.raises(ConfigError) as info:
        config.resolve("train", None, ["Train.epochs_iters"])
    assert "give a value: -o Train.epochs_iters=VALUE" in info.value.hint


def _fifo(tmp_path):
    path = tmp_path / "fifo.yaml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda t: (t / "bin.yaml", (t / "bin.yaml").write_bytes(b"\xff\xfeG\x00l\x00o\x00b\x00"))[0], "is not UTF-8 text"),
    (lambda t: (t / "latin1.yaml", (t / "latin1.yaml").write_bytes("Global:\n  output: caf\xe9\n".encode("latin-1")))[0],
     "is not UTF-8 text (byte 0xe9"),
    (lambda t: (t / "zeros.yaml", (t / "zeros.yaml").write_bytes(b"\x00" * 64))[0], "is not valid YAML"),
    (lambda t: (t / "dir.yaml", (t / "dir.yaml").mkdir())[0], "is a folder"),
    (_fifo, "is not a regular file"),
    (lambda t: (t / "deep.yaml", (t / "deep.yaml").write_text("[" * 50_000))[0], "config file"),
    (lambda t: (t / "list.yaml", (t / "list.yaml").write_text("- a\n- b\n"))[0], "must hold a mapping of sections"),
    (lambda t: (t / "py.yaml", (t / "py.yaml").write_text("Global: !!python/object/apply:os.system [id]\n"))[0],
     "is not valid YAML"),
    (lambda t: (t / "big.yaml", (t / "big.yaml").write_bytes(b"#" * (5 << 20)))[0], "a config file is a few KB"),
])
def test_config_files_that_are_not_yaml_text_get_one_line(invoke, tmp_path, make, message):
    path = make(tmp_path)
    res = invoke("check", "-c", path, "--dataset", tmp_path)
    assert res.exit_code == 2
    assert message in error_lines(res)[0] and str(path) in res.stderr


def test_utf8_bom_in_a_config_file_is_read(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufeffGlobal:\n  output: bom\n".encode("utf-8"))
    assert config.resolve("check", str(path))["Global"]["output"] == "bom"


@pytest.mark.parametrize("text,expected", [
    ("1e-4", 1e-4), ("5e-3", 5e-3), ("1E5", 1e5), ("+2.5e+1", 25.0), (".5e1", 5.0), ("3", 3), ("1_000", 1000)])
def test_exponent_numbers_are_numbers_from_dash_o_and_files(tmp_path, text, expected):
    """YAML 1.1 (PyYAML) reads 1e-4 as a string; a number is a number wherever one is expected."""
    cfg = config.resolve("train", None, [f"Train.learning_rate={text}"])
    assert cfg["Train"]["learning_rate"] == expected and not isinstance(cfg["Train"]["learning_rate"], str)
    path = tmp_path / "c.yaml"
    path.write_text(f"Train:\n  learning_rate: {text}\n")
    assert config.resolve("train", str(path))["Train"]["learning_rate"] == expected


def test_exponent_numbers_for_integer_keys_and_lists():
    cfg = config.resolve("eval", None, ["Evaluate.recall_k=[1, 5e0, 1e1]", "Predict.batch_size=3.2e1"])
    assert cfg["Evaluate"]["recall_k"] == [1, 5, 10] and cfg["Predict"]["batch_size"] == 32
    with pytest.raises(ConfigError, match=r'Predict.batch_size .*got "1.5e0", expected integer'):
        config.resolve("eval", None, ["Predict.batch_size=1.5e0"])
    with pytest.raises(ConfigError, match=r"Train.learning_rate .*got \"abc\""):
        config.resolve("train", None, ["Train.learning_rate=abc"])
    assert config.resolve("check", None, ["Global.output=1e-4"])["Global"]["output"] == "1e-4"  # a string key


def test_exponent_numbers_on_the_command_line(invoke, tmp_path, synth_ds):
    path = tmp_path / "c.yaml"
    path.write_text("CheckDataset:\n  imbalance_ratio: 2e1\n")
    res = invoke("check", "--dataset", synth_ds, "--output", tmp_path / "o", "-c", path,
                 "-o", "CheckDataset.imbalance_ratio=1e1", "--json")
    assert res.exit_code == 0, res.stderr
    assert "1e1" not in (tmp_path / "o" / "config.check.yaml").read_text()
