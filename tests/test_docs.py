"""The documentation runs: every example in README.md, docs/*.md (fenced ``bash``, ``console`` and
``python`` blocks) and the help pages' "Examples:" epilogs is executed; every command is documented
in docs/commands.md with an example; every public name has an example in docs/python.md; every
relative link of README/docs leads to a file (and heading).

The examples run offline in a small *world*: a folder holding exactly the names the examples use
(``photos/`` in class folders, ``dataset/``, ``output/inference``, ``drink_index``, ``q.jsonl``...),
built once from the suite's own fixtures, with a cache (``IMGFEAT_HOME``) holding the suite's
seeded PP-ShiTuV2_rec under the official name, as on a machine that downloaded it once. Each
document (and each help page) gets a fresh copy of the world and runs its examples in order, so a
document builds on its own earlier lines (convert, then check the result) but never on another
document's; what a document makes itself (an ``--out`` no earlier line names) is removed from its
copy first. A line must exit 0, or with the code a ``# exit N`` comment on it documents.

What cannot run here is skipped by ``SKIP`` (each pattern with its reason; a pattern that matches
nothing fails ``test_every_skip_pattern_is_needed``). ``imgfeat`` lines run in this process
through Typer's runner (paddle is imported once), also at the end of a pipe; other lines
(``python``, ``printf``, ``cat``) run in bash with this interpreter first on PATH.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import traceback
from contextlib import redirect_stdout
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

import imgfeat_cli
from conftest import TINY_VIT
from imgfeat_cli.cli.app import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: Examples that cannot run offline or on this machine: (pattern, why). Keep it short.
SKIP: List[Tuple[str, str]] = [
    (r"\bpip install\b|python3 -m venv", "installs packages from the network (what .ci/run does)"),
    (r"examples/quickstart\.sh", "trains for minutes; it is the first set-up command, run by hand"),
    (r"\bdownload (model|dataset|url)\b|https?://", "fetches from the network or a running server"),
    (r"\b(s3|gs)://", "object storage (tests/test_ray.py and the scale tests use a local S3 server)"),
    (r"--engine ray|\bray start\b|--ray-address", "starts or joins a Ray cluster (tests/test_ray.py runs one)"),
    (r"--device gpu|\bgpu:\d", "needs a GPU"),
    (r"\$SLURM_\w+|\$JOB_COMPLETION_INDEX", "set by a Slurm or Kubernetes scheduler"),
    (r"\bimgfeat serve\b", "a server that runs until stopped (its own tests start one)"),
    (r"--index drink_idx\b", "docs/scale.md's index, built from an s3:// prefix just before"),
]
#: Appended to every ``imgfeat`` line of that command. train: the world's images are 32 px and
#: the recipe's 224 px x batch 128 would take minutes on a CPU; later options win, so the line's
#: own dataset, output, ``-c`` and other keys are what runs. quantize: the world's model has seeded
#: random weights, whose int8 features miss the accuracy bar trained models meet (docs/engines.md;
#: tests/test_quantize.py lowers it the same way).
KNOBS = {"train": ["--epochs", "1", "-o", "Train.input_size=32", "-o", "Train.batch_size=16"],
         "quantize": ["-o", "Quantize.min_mean_cosine=0.9"]}
#: Docs that other branches are writing and README/docs already link to; remove once merged.
PENDING: set = set()


# -- the examples ------------------------------------------------------------------------------

@dataclass
class Step:
    text: str  # a command as the docs show it (continuations joined), or a python block
    where: str  # file:line, or the help page
    exit: int = 0  # the documented exit code
    python: bool = False

    def skip_reason(self) -> Optional[str]:
        return next((why for pattern, why in SKIP if re.search(pattern, self.text)), None)


@dataclass
class Script:
    """One document's (or one help page's) examples, in order."""

    name: str
    steps: List[Step]


FENCE = re.compile(r"^```(\w*)\s*$")
EXIT_NOTE = re.compile(r"#.*\bexit (\d+)\b")


def fenced_blocks(path: Path) -> List[Tuple[str, int, List[str]]]:
    """(language, number of its first line, lines) of each fenced block."""
    blocks, lang, start, body = [], None, 0, []
    for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(raw.strip())
        if m and lang is None:
            lang, start, body = m.group(1) or "text", no + 1, []
        elif raw.strip() == "```" and lang is not None:
            blocks.append((lang, start, body))
            lang = None
        elif lang is not None:
            body.append(raw)
    return blocks


def command_lines(lang: str, start: int, body: List[str]) -> List[Tuple[int, str]]:
    """(line number, command) of a bash block (every line) or a console block (``$ `` lines);
    lines ending in a backslash are joined, comments and blank lines dropped."""
    out, pending, first = [], "", 0
    for no, raw in enumerate(body, start):
        text = raw.strip()
        if lang == "console" and not pending:
            if not text.startswith("$ "):
                continue
            text = text[2:]
        if not pending:
            first = no
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text, pending = pending + text, ""
        if text and not text.startswith("#"):
            out.append((first, text))
    return out


def doc_script(path: Path) -> Script:
    rel = path.relative_to(REPO).as_posix()
    steps = []
    for lang, start, body in fenced_blocks(path):
        if lang in ("bash", "console"):
            for no, text in command_lines(lang, start, body):
                m = EXIT_NOTE.search(text)
                steps.append(Step(text, f"{rel}:{no}", int(m.group(1)) if m else 0))
        elif lang == "python":
            steps.append(Step("\n".join(body), f"{rel}:{start}", python=True))
    return Script(rel, steps)


def help_pages(group: typer.Typer = app, prefix: Tuple[str, ...] = ()) -> List[Tuple[Tuple[str, ...], str]]:
    """(command path, epilog) of the root page and of every command, group and subcommand."""
    pages = [] if prefix else [((), group.info.epilog or "")]
    pages += [((*prefix, info.name), info.epilog or "") for info in group.registered_commands]
    for sub in group.registered_groups:
        path = (*prefix, sub.name)
        pages += [(path, sub.typer_instance.info.epilog or ""), *help_pages(sub.typer_instance, path)]
    return pages


def help_scripts() -> List[Script]:
    """One script per help page: its example lines not shown on an earlier page (a group's page
    repeats its subcommands' examples)."""
    seen, scripts = set(), []
    for path, epilog in help_pages():
        name = " ".join(("imgfeat", *path, "--help"))
        lines = [ln.strip() for ln in epilog.partition("Examples:")[2].splitlines() if ln.strip()]
        scripts.append(Script(name, [Step(t, name) for t in lines if t not in seen]))
        seen.update(lines)
    return scripts


def command_paths(group: typer.Typer = app, prefix: Tuple[str, ...] = ()) -> List[Tuple[str, ...]]:
    paths = [(*prefix, info.name) for info in group.registered_commands]
    for sub in group.registered_groups:
        paths += [(*prefix, sub.name), *command_paths(sub.typer_instance, (*prefix, sub.name))]
    return paths


DOC_SCRIPTS = [doc_script(p) for p in DOCS]
HELP_SCRIPTS = help_scripts()
ALL_STEPS = [step for script in DOC_SCRIPTS + HELP_SCRIPTS for step in script.steps]


# -- the world ---------------------------------------------------------------------------------

def _image(path: Path, colour: Tuple[int, int, int], seed: int, size: int = 32) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-30, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)


def _labelme_folder(root: Path) -> None:
    """labelme's own layout: ``x.json`` beside ``x.jpg``, the classes in ``flags.txt``."""
    names = ["cat", "dog"]
    root.mkdir(parents=True)
    (root / "flags.txt").write_text("__ignore__\n" + "\n".join(names) + "\n")
    for i in range(12):
        name = names[i % 2]
        _image(root / f"{i:03d}.jpg", (200, 60, 60) if name == "cat" else (60, 60, 200), i, 24)
        (root / f"{i:03d}.json").write_text(json.dumps(
            {"version": "5.4.1", "flags": {"__ignore__": False, **{n: n == name for n in names}}, "shapes": [],
             "imagePath": f"{i:03d}.jpg", "imageData": None, "imageHeight": 24, "imageWidth": 24}))


def _cache_official(home: Path, model_dir: str) -> Path:
    """The seeded PP-ShiTuV2_rec as the cached official inference folder and pretrained weights
    (recorded in the manifest as a verified download); returns the weights."""
    import paddle

    from imgfeat_cli.common import cache
    from imgfeat_cli.common.download import sha256_file
    from imgfeat_cli.models.hub import inference_dir
    from imgfeat_cli.models.registry import get_spec

    spec = get_spec("PP-ShiTuV2_rec")
    cfg = spec.pretrained_cfg()
    shutil.copytree(model_dir, inference_dir(spec.name, cfg.tag))
    weights = home / "models" / spec.name / cfg.pretrained_url.rsplit("/", 1)[-1]
    paddle.seed(0)
    paddle.save(spec.build(num_classes=None).state_dict(), str(weights))
    cache._record(cfg.pretrained_url, weights, sha256_file(weights), weights.stat().st_size, "docs test world")
    return weights


def _checkpoints(world: Path, weights: Path) -> None:
    """``runs/shitu/best_model/best_model.pdparams`` (PP-ShiTuV2_rec) and ``model.pdparams`` (a
    tiny CLIP ViT-B: export reads its sizes from the shapes) for the export examples."""
    import paddle

    from imgfeat_cli.models.registry import get_spec

    best = world / "runs" / "shitu" / "best_model" / "best_model.pdparams"
    best.parent.mkdir(parents=True)
    shutil.copy(weights, best)
    paddle.seed(0)
    tiny = get_spec("PP-ShiTuV2_rec_CLIP_vit_base").build(num_classes=None, arch=TINY_VIT)
    paddle.save(tiny.state_dict(), str(world / "model.pdparams"))


def _galleries(world: Path) -> None:
    """``gallery/drink_label.txt`` (``path<TAB>label``, PaddleClas' gallery list), ``new_items.txt``."""
    gallery = world / "gallery"
    lines = []
    for src in sorted((world / "photos").glob("c0*/00[0-2].jpg")):
        rel = f"{src.parent.name}/{src.name}"
        (gallery / src.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, gallery / rel)
        lines.append(f"{rel}\tclass {src.parent.name}")
    (gallery / "drink_label.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for i in range(2):
        _image(world / "new_items" / f"n{i}.jpg", (30, 200, 30), 100 + i)
    (world / "new_items.txt").write_text("new_items/n0.jpg green tea\nnew_items/n1.jpg green tea\n")


def build_world(root: Path, home: Path, model_dir: str) -> Path:
    """The files the examples name; the outputs they start from (an index, feature files) are made
    here by the commands that make them."""
    from imgfeat_cli.datasets.synthetic import make_dataset

    weights = _cache_official(home, model_dir)
    world = root / "world"
    model = Path(model_dir).resolve()
    for link in (world / "output" / "inference", world / "examples" / "output" / "inference",
                 world / "PP-ShiTuV2_rec_infer"):  # the official tar's folder, as docs/serve.md names it
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(model)
    for name in ("make_demo_dataset.py", "demo_train.yaml"):
        shutil.copy(REPO / "examples" / name, world / "examples" / name)
    make_dataset(world / "dataset", num_classes=8, per_class=6, size=32, seed=1)
    shutil.copytree(world / "dataset" / "images", world / "photos")  # class folders c00 ... c07
    shutil.copy(world / "photos" / "c00" / "000.jpg", world / "photo.jpg")
    (world / "shelf").mkdir()
    for i, src in enumerate(sorted((world / "photos").glob("c0[1-3]/001.jpg"))):
        shutil.copy(src, world / "shelf" / f"shot{i}.jpg")
    _galleries(world)
    _labelme_folder(world / "labelme_folder")
    _checkpoints(world, weights)
    run_world_line(world, "imgfeat index build -g gallery/drink_label.txt --out drink_index --model-dir output/inference")
    for split, out in (("query", "q.jsonl"), ("gallery", "g.jsonl"), ("query", "queries.jsonl"),
                       ("gallery", "gallery.jsonl")):
        listed = [f"dataset/{ln.split()[0]}" for ln in (world / "dataset" / f"{split}.txt").read_text().splitlines()]
        run_world_line(world, f"imgfeat embed {' '.join(listed)} --labels dataset/{split}.txt --out {out} "
                              "--model-dir output/inference")
    return world


def run_world_line(world: Path, text: str) -> None:
    code, out = run_step(world, Step(text, "world"), {})
    assert code == 0, f"building the world: {text}\n{out}"


@pytest.fixture(scope="module")
def world(tmp_path_factory, model_dir):
    """The base world (copied for each document); the environment its commands see."""
    root = tmp_path_factory.mktemp("docs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGFEAT_HOME", str(root / "home"))
        mp.setenv("IMGFEAT_OFFLINE", "1")
        mp.setenv("COLUMNS", "100")
        mp.chdir(root)
        yield build_world(root, root / "home", model_dir)


# -- running ------------------------------------------------------------------------------------

SHELL = re.compile(r"[|&;<>()$`*?]")
OUT_OPTIONS = ("--out", "-O", "--output")


def imgfeat_argv(text: str) -> Optional[Tuple[Dict[str, str], List[str]]]:
    """(environment, argv after ``imgfeat``) of a plain ``[VAR=value ...] imgfeat ...`` line."""
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        return None
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if not words or words[0] != "imgfeat" or SHELL.search(shlex.join(words)):
        return None
    return env, words[1:]


def run_imgfeat(env: Dict[str, str], argv: List[str], stdin: Optional[str] = None) -> Tuple[int, str]:
    argv = [*argv, *KNOBS.get(argv[0], [])] if argv else argv
    res = CliRunner().invoke(app, argv, input=stdin, env=env or None)
    out = res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        out += "".join(traceback.format_exception(type(res.exception), res.exception, res.exception.__traceback__))
    return res.exit_code, out


def bash(cwd: Path, text: str) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return subprocess.run(["bash", "-c", text], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PATH": path, "PYTHONPATH": str(REPO)})


def run_python(code: str, where: str, namespace: dict) -> Tuple[int, str]:
    out = StringIO()
    try:
        with redirect_stdout(out):
            exec(compile(code, where, "exec"), namespace)  # noqa: S102  (the docs' own examples)
    except Exception:  # the failure, with the docs' line numbers
        return 1, out.getvalue() + traceback.format_exc()
    return 0, out.getvalue()


def run_step(cwd: Path, step: Step, namespace: dict) -> Tuple[int, str]:
    """Run one step in ``cwd``: python in ``namespace``; ``imgfeat`` in this process (also at the
    end of a pipe, fed by the commands before it); anything else in bash."""
    prev = os.getcwd()
    os.chdir(cwd)
    try:
        if step.python:
            return run_python(step.text, step.where, namespace)
        plain = imgfeat_argv(step.text)
        if plain is not None:
            return run_imgfeat(*plain)
        head, sep, tail = step.text.rpartition("|")
        piped = imgfeat_argv(tail) if sep and "imgfeat" not in head else None
        if piped is not None:
            fed = bash(cwd, head)
            if fed.returncode != 0:
                return fed.returncode, fed.stderr
            return run_imgfeat(*piped, stdin=fed.stdout)
        done = bash(cwd, step.text)
        return done.returncode, done.stdout + done.stderr
    finally:
        os.chdir(prev)


def made_here(script: Script) -> List[str]:
    """What the script makes itself: the ``--out`` of a line that no earlier line names."""
    seen, made = set(), []
    for step in script.steps:
        if step.python:
            continue
        try:
            words = [w.rstrip("/") for w in shlex.split(step.text, comments=True)]
        except ValueError:
            continue
        made += [value for opt, value in zip(words, words[1:]) if opt in OUT_OPTIONS and value not in seen]
        seen.update(words)
    return made


def run_script(world: Path, script: Script) -> List[str]:
    """Run the script in a fresh copy of the world; the failures, described."""
    cwd = world.parent / "runs" / re.sub(r"[^\w.-]+", "_", script.name)
    shutil.copytree(world, cwd, symlinks=True)
    for name in made_here(script):
        target = cwd / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    namespace: dict = {"__name__": "__docs__"}
    failures = []
    for step in script.steps:
        if step.skip_reason():
            continue
        code, out = run_step(cwd, step, namespace)
        if code != step.exit:
            shown = step.text if not step.python else "the python block"
            failures.append(f"{step.where}: `{shown}` exited {code}, documented {step.exit}\n{out[-3000:]}")
    return failures


# -- the tests -----------------------------------------------------------------------------------

RUNNABLE = [s for s in DOC_SCRIPTS + HELP_SCRIPTS if any(not st.skip_reason() for st in s.steps)]


@pytest.mark.slow
@pytest.mark.parametrize("script", RUNNABLE, ids=lambda s: s.name)
def test_examples_run_with_their_documented_exit_code(world, script):
    failures = run_script(world, script)
    assert not failures, "\n\n".join(failures)


def test_examples_are_found_in_every_source():
    """The extraction itself: a change of fence or epilog format must not make the docs test
    silently run nothing."""
    by_name = {s.name: s for s in DOC_SCRIPTS + HELP_SCRIPTS}
    assert len([st for st in by_name["README.md"].steps if st.text.startswith("imgfeat ")]) >= 6
    assert any(st.python for st in by_name["README.md"].steps)
    assert len([st for st in by_name["docs/python.md"].steps if st.python]) >= 15
    assert {s.name for s in HELP_SCRIPTS} >= {"imgfeat --help", "imgfeat embed --help", "imgfeat index --help"}
    assert len([st for s in HELP_SCRIPTS for st in s.steps]) >= 25
    runnable = [st for st in ALL_STEPS if not st.skip_reason()]
    # most examples must run: object stores, Ray clusters and the service (docs/scale.md, serve.md) are
    # documented with examples that cannot run here; two runnable for each skipped one is the floor
    assert len(runnable) >= 2 * (len(ALL_STEPS) - len(runnable)), "most examples must run, not be skipped"


def test_every_skip_pattern_is_needed():
    for pattern, why in SKIP:
        assert any(re.search(pattern, st.text) for st in ALL_STEPS), f"{pattern} ({why}) skips nothing: remove it"


def test_knobs_name_real_keys():
    from imgfeat_cli.cli.helpdoc import schema_node

    for argv in KNOBS.values():
        for key in [v.partition("=")[0] for o, v in zip(argv, argv[1:]) if o == "-o"]:
            schema_node(key)


def heading_slugs(path: Path) -> set:
    """GitHub's anchors for the headings of a Markdown file."""
    slugs = set()
    for lang_free in _outside_fences(path):
        m = re.match(r"#{1,6}\s+(.*)", lang_free)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower().replace("`", ""))
            slugs.add(text.replace(" ", "-"))
    return slugs


def _outside_fences(path: Path) -> List[str]:
    lines, inside = [], False
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.strip().startswith("```"):
            inside = not inside
        elif not inside:
            lines.append(raw)
    return lines


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_lead_to_a_file_and_heading(doc):
    broken = []
    for line in _outside_fences(doc):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            dest = (doc.parent / file_part).resolve() if file_part else doc
            rel = dest.relative_to(REPO).as_posix() if dest.is_relative_to(REPO) else str(dest)
            if not dest.exists():
                if rel not in PENDING:
                    broken.append(f"{target}: no file {rel}")
                continue
            if anchor and dest.suffix == ".md" and anchor not in heading_slugs(dest):
                broken.append(f"{target}: no heading #{anchor} in {rel}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


REPO_PATH = re.compile(r"(?<![\w/.])(?:imgfeat_cli|schemas|examples|benchmarks|tests|docs|\.ci)/[\w./*-]*[\w*]")
MODULE = re.compile(r"\bimgfeat_cli(?:\.\w+)+")
#: What the quickstart makes (git-ignored): named by the docs, absent from a fresh clone.
GENERATED = ("examples/output", "examples/demo_dataset")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_files_and_modules_the_docs_name_exist(doc):
    """Nothing in README or docs names a repository file or a Python name that does not exist."""
    import importlib

    text = doc.read_text(encoding="utf-8").replace("/\n", "/")  # a path wrapped at a slash
    missing = [m for m in set(REPO_PATH.findall(text))
               if not m.startswith(GENERATED) and m not in PENDING and not list(REPO.glob(m))]
    for dotted in set(MODULE.findall(text)):
        parts, obj = dotted.split("."), None
        for i in range(len(parts), 0, -1):  # the longest importable module, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr, None)
            break
        if obj is None:
            missing.append(dotted)
    section = (REPO / "pyproject.toml").read_text(encoding="utf-8").split("[project.optional-dependencies]")[1]
    extras = set(re.findall(r"^([\w-]+) = \[", section.split("\n[")[0], re.M))
    missing += [f"extra [{e}]" for group in re.findall(r"\.\[([\w,-]+)\]", text)
                for e in group.split(",") if e not in extras]
    assert not missing, f"{doc.name} names what does not exist: {sorted(missing)}"


def test_every_command_has_a_section_and_an_example_in_commands_md():
    headings = heading_slugs(REPO / "docs" / "commands.md")
    examples = [st.text for st in doc_script(REPO / "docs" / "commands.md").steps if not st.python]
    for path in command_paths():
        name = " ".join(("imgfeat", *path))
        assert name.replace(" ", "-") in headings, f"docs/commands.md has no section `{name}`"
        assert any(ex == name or ex.startswith(name + " ") or f"| {name} " in ex for ex in examples), \
            f"docs/commands.md shows no example of `{name}`"


def test_every_public_name_has_an_example_in_python_md():
    code = "\n".join(st.text for st in doc_script(REPO / "docs" / "python.md").steps if st.python)
    missing = [name for name in imgfeat_cli.__all__ if not re.search(rf"\b{re.escape(name)}\b", code)]
    assert not missing, f"docs/python.md has no example using {missing}"


def test_readme_is_short_opens_with_the_two_set_up_commands_and_uses_the_public_api():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    first = doc_script(REPO / "README.md").steps[:2]
    assert first[0].text.endswith("bash examples/quickstart.sh") and "pip install -e ." in first[0].text
    assert first[1].text.endswith("python -m pytest") and '".[test]"' in first[1].text
    imports = [node for step in doc_script(REPO / "README.md").steps if step.python
               for node in ast.walk(ast.parse(step.text)) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert imports
    for node in imports:
        assert isinstance(node, ast.ImportFrom) and node.module == "imgfeat_cli", \
            f"README's Python imports {ast.unparse(node)}: use the package top"
        assert {a.name for a in node.names} <= set(imgfeat_cli.__all__), ast.unparse(node)


def test_the_offline_routes_of_readme_are_the_hints():
    """README's "No internet?" names every route the offline hint names (models/hub.py)."""
    from imgfeat_cli.models.hub import MIRROR_ROUTE, OFFLINE_ROUTES

    section = (REPO / "README.md").read_text(encoding="utf-8").split("## No internet?")[1].split("\n## ")[0]
    hint = " ".join(OFFLINE_ROUTES.values()) + MIRROR_ROUTE
    for route in ("examples/output/inference", "imgfeat export", "imgfeat download model",
                  "Train.pretrain_weight_path=none", "IMGFEAT_BASE_URL"):
        assert route in hint and route in section, route
    assert "offline.md" in section
