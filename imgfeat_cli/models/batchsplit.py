"""Depthwise convolutions of CPU training, cut over the batch across paddle's math threads.

Why: paddle's CPU depthwise kernel (an im2col and a matrix-vector product per image and channel)
runs on one thread whatever ``OMP_NUM_THREADS`` says, and in PP-ShiTuV2_rec it is most of a
training step: profiled at batch 32, 224 px, 2 threads, forward 1.5 s and backward 3.4 s of 8.2 s.
Each image's output and input gradient depend on that image alone, and paddle releases the GIL
inside its kernels, so the batch is cut into one slice per math thread and each slice runs the same
kernel on its own thread. Outputs and input gradients are bit-identical to the uncut kernel; the
weight gradient is the sum of the slices' (a sum in another order: about 1e-7 relative). Measured
on 2 cores (docs/training.md): a step at batch 32 from 7.3 to 5.9-6.2 s.

Only where it applies: a layer in training mode, in dygraph, on CPU, with more than one math
thread and at least two images; anything else (eval, export tracing, GPU) runs paddle's layer.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Tuple

import paddle
import paddle.nn as nn
from paddle.autograd import PyLayer

from imgfeat_cli.common.threads import math_threads

_pools: Dict[int, ThreadPoolExecutor] = {}


def _pool(n: int) -> ThreadPoolExecutor:
    if n not in _pools:
        _pools[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="imgfeat-depthwise")
    return _pools[n]


def _slices(tensor: paddle.Tensor, n: int) -> List[paddle.Tensor]:
    """``n`` slices of the batch, as even as the batch allows (sizes differ by one at most)."""
    size = int(tensor.shape[0])
    return paddle.split(tensor, [size // n + (1 if i < size % n else 0) for i in range(n)])


class _CutDepthwise(PyLayer):
    """``depthwise_conv2d`` (no bias) with its batch cut across threads, forward and backward."""

    @staticmethod
    def forward(ctx: Any, x: paddle.Tensor, weight: paddle.Tensor, attrs: Tuple[Any, ...], n: int) -> paddle.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.attrs, ctx.n = attrs, n
        parts = _pool(n).map(lambda part: paddle._C_ops.depthwise_conv2d(part, weight, *attrs), _slices(x, n))
        return paddle.concat(list(parts))

    @staticmethod
    def backward(ctx: Any, grad: paddle.Tensor) -> Tuple[Any, Any]:
        x, weight = ctx.saved_tensor()
        pairs = zip(_slices(x, ctx.n), _slices(grad, ctx.n))
        grads = list(_pool(ctx.n).map(
            lambda pair: paddle._C_ops.depthwise_conv2d_grad(pair[0], weight, pair[1], *ctx.attrs), pairs))
        weight_grad = grads[0][1]
        for _, part in grads[1:]:  # in slice order: the same sum every run
            weight_grad = weight_grad + part
        x_grad = None if x.stop_gradient else paddle.concat([g for g, _ in grads])
        return x_grad, (None if weight.stop_gradient else weight_grad)


class DepthwiseConv2D(nn.Conv2D):
    """``nn.Conv2D`` with ``groups == in_channels`` and no bias (parameter names unchanged), whose
    CPU training forward and backward use every math thread."""

    @paddle.jit.not_to_static  # an export traces paddle's layer (below), never the cut
    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if not (self.training and paddle.in_dynamic_mode() and x.place.is_cpu_place()
                and isinstance(self._padding, int) and self.bias is None):
            return super().forward(x)
        n = min(math_threads(), int(x.shape[0]))
        if n < 2:
            return super().forward(x)
        attrs = (list(self._stride), [self._padding] * 2, "EXPLICIT", self._groups, list(self._dilation),
                 self._data_format)
        return _CutDepthwise.apply(x, self.weight, attrs, n)
