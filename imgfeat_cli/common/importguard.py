"""Ctrl-C never cuts the import of a native library; it takes effect the moment the import ends.

A ``KeyboardInterrupt`` raised while paddle's extension module initialises leaves paddle half
registered: paddle prints "Can not import paddle core while this file exists", the engine choice
takes paddle for missing and goes on without it, and the next ``import paddle`` fails for good
("generic_type: type "AmpLevel" is already registered!"). Measured: Ctrl-C 0.7-0.9 s after
``imgfeat embed`` started ended in exit 1 with an "unexpected ImportError".

:func:`install` adds an import hook (the console script does it first thing): while the outermost
import of one of :data:`NATIVE_PACKAGES` runs on the main thread, SIGINT is only recorded, and
raised as ``KeyboardInterrupt`` right after the import completes, so the command reports it as
any other Ctrl-C (one line, exit 130). Imports take seconds at most; nothing else is deferred.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

from imgfeat_cli.common.folders import deferred_interrupt

#: Packages whose import loads native code that a Ctrl-C must not cut (and that take long enough
#: to import for a Ctrl-C to land there).
NATIVE_PACKAGES = frozenset({"paddle", "paddle2onnx", "onnxruntime", "openvino", "faiss", "cv2", "pyarrow", "ray"})


class _NativeImportShield:
    """A meta-path finder that finds nothing itself: it lets the other finders find a native
    package and runs that package's ``exec_module`` under ``folders.deferred_interrupt``."""

    def __init__(self) -> None:
        self.depth = 0

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None, target: Any = None) -> Any:
        if fullname not in NATIVE_PACKAGES or self.depth:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            self.depth += 1
            try:
                with deferred_interrupt():
                    run(module)
            finally:
                self.depth -= 1

        try:
            loader.exec_module = exec_module  # this loader instance serves this module only
        except AttributeError:
            return spec
        return spec


def install() -> None:
    """Put the shield first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _NativeImportShield) for f in sys.meta_path):
        sys.meta_path.insert(0, _NativeImportShield())
