"""Values read from the environment when imgfeat is first imported, before any library can change them.

``import paddle`` sets ``OMP_NUM_THREADS=1`` when it is unset, which would make every engine (and
training) single-threaded; what the user, a scheduler, a container or Ray set must therefore be read
before paddle is imported. The package root imports this module first thing, so the value is the
process's own, whatever is imported later. Imports nothing but ``os`` and ``sys`` (already loaded).
"""
import os as _os
import sys as _sys

#: ``OMP_NUM_THREADS`` as it was set before imgfeat was imported (``None``: not set). When paddle
#: was imported first, a ``1`` is taken to be paddle's own and ignored.
OMP_NUM_THREADS_AT_START = _os.environ.get("OMP_NUM_THREADS")
if OMP_NUM_THREADS_AT_START == "1" and "paddle" in _sys.modules:
    OMP_NUM_THREADS_AT_START = None
