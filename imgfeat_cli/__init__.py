"""imgfeat: PaddleX-compatible image feature extraction (PP-ShiTuV2_rec, CLIP ViT).

The package root is the roof: the public Python API, loaded on first attribute access (PEP 562),
so ``import imgfeat_cli`` stays light (no paddle: the CLI's ``--help`` answers instantly). It holds
no values of its own: the version lives in :mod:`imgfeat_cli.common.version` and the environment
read at start-up in :mod:`imgfeat_cli.common.startup`, imported first here so that it sees the
environment before any library (paddle) changes it.
"""
from imgfeat_cli.common import startup as _startup  # noqa: F401  (first: reads OMP_NUM_THREADS)
from imgfeat_cli.common.version import __version__

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
