"""The library's front door: one entry point per job, on top of every engine.

``embed`` (this machine or a Ray cluster, into memory, a file or a folder), ``search`` and the
index verbs (with the index's own model), and ``evaluate``. The command line
(:mod:`imgfeat_cli.cli`), the service (:mod:`imgfeat_cli.serve`) and Python callers all call these;
the package root re-exports them (``from imgfeat_cli import embed``). Each takes a
:class:`~imgfeat_cli.models.source.ModelSource` (or a loaded model) and plain options, returns a
result object, and raises :class:`~imgfeat_cli.common.errors.ImgfeatError` subclasses.
"""
