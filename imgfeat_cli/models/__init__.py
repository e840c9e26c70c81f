"""Feature models: architectures (paddle dygraph), the registry, pre-processing, predictors and export.

Modules here import paddle lazily where they can; importing :mod:`imgfeat_cli.models.registry` is
cheap, building or running a model loads paddle.
"""
