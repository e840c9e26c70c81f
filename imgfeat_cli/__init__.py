"""imgfeat: PaddleX-compatible image feature extraction (PP-ShiTuV2_rec, CLIP ViT).

The package root stays import-light: ``import imgfeat_cli`` must not pull in paddle, so the CLI's
``--help``/``--version`` answer instantly. The model API is loaded on first attribute access.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "build_index", "Index"]


def __getattr__(name: str) -> Any:  # PEP 562 lazy exports
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
