"""imgfeat: PaddleX-compatible image feature extraction (PP-ShiTuV2_rec, CLIP ViT).

The package root stays import-light: ``import imgfeat_cli`` must not pull in paddle, so the CLI's
``--help``/``--version`` answer instantly, and it imports nothing at all (not even ``typing``), so
the console script reaches its Ctrl-C guard (``cli.entry``) as early as possible (``os`` is
already loaded by Python's own start-up). The model API
is loaded on first attribute access.
"""
import os as _os  # already loaded by Python's start-up: costs nothing

__version__ = "0.1.0"

#: ``OMP_NUM_THREADS`` as the user (or a scheduler, or Ray) set it, read before anything imports
#: paddle: ``import paddle`` sets it to 1 when it is unset, which would make every runner
#: single-threaded (see :func:`imgfeat_cli.common.system.cpu_count`). When paddle was imported
#: first, a 1 is taken to be paddle's.
OMP_NUM_THREADS_AT_START = _os.environ.get("OMP_NUM_THREADS")
if OMP_NUM_THREADS_AT_START == "1" and "paddle" in __import__("sys").modules:
    OMP_NUM_THREADS_AT_START = None

__all__ = ["__version__", "create_model", "list_models", "build_index", "Index"]


def __getattr__(name: str) -> object:  # PEP 562 lazy exports
    if name == "create_model":
        from imgfeat_cli.pipeline.predictor import create_model

        return create_model
    if name == "list_models":
        from imgfeat_cli.models.registry import list_models

        return list_models
    if name == "build_index":
        from imgfeat_cli.retrieval.builder import build_index

        return build_index
    if name == "Index":
        from imgfeat_cli.retrieval.index import Index

        return Index
    raise AttributeError(f"module 'imgfeat_cli' has no attribute {name!r}")
