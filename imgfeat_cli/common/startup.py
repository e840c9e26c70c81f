"""Values read from the environment when imgfeat is first imported, before any library can change them.

``import paddle`` sets ``OMP_NUM_THREADS=1`` when it is unset, which would make every engine (and
training) single-threaded; what the user, a scheduler, a container or Ray set must therefore be read
before paddle is imported. The package root imports this module first thing, so the value is the
process's own, whatever is imported later. Imports nothing but ``os``, ``sys`` and ``warnings``
(already loaded).

It is also where paddle's start-up noise is turned down, in every process that imports imgfeat
(the command, inference streams, training workers, Ray actors) before any of them imports paddle.
"""
import os as _os
import sys as _sys
import warnings as _warnings

#: ``OMP_NUM_THREADS`` as it was set before imgfeat was imported (``None``: not set). When paddle
#: was imported first, a ``1`` is taken to be paddle's own and ignored.
OMP_NUM_THREADS_AT_START = _os.environ.get("OMP_NUM_THREADS")
if OMP_NUM_THREADS_AT_START == "1" and "paddle" in _sys.modules:
    OMP_NUM_THREADS_AT_START = None

# Paddle's C++ logging goes to stderr through glog; keep only errors unless the user asked for more.
_os.environ.setdefault("GLOG_minloglevel", "2")
# `import paddle` looks for a C++ compiler cache for custom operators imgfeat never builds.
_warnings.filterwarnings("ignore", message="No ccache found")
# Paddle warns on every training-mode BatchNorm forward that it tracks global statistics (it always
# has); thousands of identical lines per epoch would bury the training log.
_warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
