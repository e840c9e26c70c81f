"""`.ci/run` says first what the suite's numbers depend on (issue 21): the CPU's model and its
vector flags before anything else, the versions pip resolved right after the install."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def _script() -> str:
    return (REPO / ".ci" / "run").read_text(encoding="utf-8")


def _heredocs(text: str) -> list:
    """(line index where it starts, Python source) for each ``python... - <<'EOF'`` block."""
    lines, out = text.splitlines(), []
    for i, line in enumerate(lines):
        if re.match(r"python3? - <<'EOF'$", line):
            end = lines.index("EOF", i)
            out.append((i, "\n".join(lines[i + 1:end])))
    return out


def test_ci_prints_cpu_flags_first_and_resolved_versions_after_the_install():
    text = _script()
    lines = text.splitlines()
    blocks = _heredocs(text)
    assert len(blocks) == 2
    install = next(i for i, line in enumerate(lines) if "pip install" in line and ".[test]" in line)
    venv = next(i for i, line in enumerate(lines) if "-m venv" in line)
    (cpu_at, cpu_src), (ver_at, ver_src) = blocks
    assert cpu_at < venv and ver_at > install
    cpu = subprocess.run([sys.executable, "-c", cpu_src], capture_output=True, text=True, check=True).stdout
    assert re.fullmatch(r"CPU: .+; flags: .+\n", cpu), cpu
    flags = cpu.split("; flags: ", 1)[1].strip()
    assert flags.startswith("none of") or all(f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
                                              or f.startswith("amx") for f in flags.split()), flags
    versions = subprocess.run([sys.executable, "-c", ver_src], capture_output=True, text=True, check=True).stdout
    assert versions.startswith("versions: ")
    for dist in ("paddlepaddle", "numpy", "opencv", "onnxruntime", "openvino", "faiss", "ray"):
        assert re.search(rf"\b{dist}[\w-]* (\d+\.\d+|not installed)", versions), (dist, versions)
