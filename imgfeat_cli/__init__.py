"""imgfeat: PaddleX-compatible image feature extraction (PP-ShiTuV2_rec, CLIP ViT).

The public Python API is this package's top level (``from imgfeat_cli import embed, Index``); the
names below are the whole surface, each documented with an example in ``docs/python.md``:

* models: :func:`create_model` (PaddleX style), :class:`ModelSource` (what to load and how to run
  it), :func:`list_models`;
* jobs: :func:`embed` (memory, a file or a folder; this machine or Ray), :func:`read_features`,
  :func:`evaluate`, :func:`search` (:class:`ReportSpec`: their HTML reports);
* indexes: :class:`Index`, :func:`build_index`, :func:`add_to_index`, :func:`remove_from_index`;
* errors: :class:`ImgfeatError` and its subclasses, each with the ``exit_code`` the CLI uses.

The package root is the roof: it holds no values of its own and loads each name on first access
(PEP 562), so ``import imgfeat_cli`` stays light (no paddle: the CLI's ``--help`` answers
instantly). The version lives in :mod:`imgfeat_cli.common.version`; the environment read at
start-up in :mod:`imgfeat_cli.common.startup`, imported first here so that it sees the
environment before any library (paddle) changes it.
"""
from imgfeat_cli.common import startup as _startup  # noqa: F401  (first: reads OMP_NUM_THREADS)
from imgfeat_cli.common.version import __version__

#: public name -> the module that defines it
_EXPORTS = {
    "create_model": "imgfeat_cli.pipeline.predictor",
    "FeatureModel": "imgfeat_cli.pipeline.predictor",
    "ModelSource": "imgfeat_cli.models.source",
    "list_models": "imgfeat_cli.models.registry",
    "embed": "imgfeat_cli.api.embedding",
    "EmbedOptions": "imgfeat_cli.pipeline.job",
    "EmbedResult": "imgfeat_cli.pipeline.job",
    "read_features": "imgfeat_cli.pipeline.readers",
    "evaluate": "imgfeat_cli.api.evaluation",
    "search": "imgfeat_cli.api.retrieval",
    "Index": "imgfeat_cli.retrieval.index",
    "build_index": "imgfeat_cli.api.retrieval",
    "add_to_index": "imgfeat_cli.api.retrieval",
    "remove_from_index": "imgfeat_cli.api.retrieval",
    "ReportSpec": "imgfeat_cli.reports.spec",
    "ImgfeatError": "imgfeat_cli.common.errors",
    "UsageError": "imgfeat_cli.common.errors",
    "ConfigError": "imgfeat_cli.common.errors",
    "DatasetError": "imgfeat_cli.common.errors",
    "ModelError": "imgfeat_cli.common.errors",
    "UnknownModel": "imgfeat_cli.common.errors",
    "ImageDecodeError": "imgfeat_cli.common.errors",
    "IndexFormatError": "imgfeat_cli.common.errors",
    "Interrupted": "imgfeat_cli.common.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:  # PEP 562 lazy exports
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'imgfeat_cli' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(__all__)
