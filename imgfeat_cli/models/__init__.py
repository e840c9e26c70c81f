"""Feature models: architectures (paddle dygraph), the registry, pre-processing, predictors and export.

Modules here import paddle lazily where they can; importing :mod:`imgfeat_cli.models.registry` is
cheap, building or running a model loads paddle.
"""

import os as _os
import warnings as _warnings

# Paddle's C++ logging goes to stderr through glog; keep only errors unless the user asked for more.
_os.environ.setdefault("GLOG_minloglevel", "2")
_warnings.filterwarnings("ignore", message="No ccache found")
# Paddle warns on every training-mode BatchNorm forward that it tracks global statistics (it always
# has); thousands of identical lines per epoch would bury the training log.
_warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
