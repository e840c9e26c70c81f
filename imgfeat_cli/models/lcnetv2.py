"""PP-ShiTuV2_rec: PP-LCNetV2_base (ShiTu variant) -> BNNeck -> FC head.

Parameter names and shapes equal PaddleClas's (``shared/spec/state_dict_PP-ShiTuV2_rec.tsv``) so
official ``.pdparams`` load unchanged. The rep blocks train with parallel 5x5/3x3/1x1 depthwise
branches and are folded into one 5x5 conv (``dw_conv``) by :meth:`PPShiTuV2Rec.reparameterize`
before export, which is what the official inference models contain.
"""
from __future__ import annotations

from typing import List, Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from imgfeat_cli.models.base import RecModel
from imgfeat_cli.models.batchsplit import DepthwiseConv2D

# in_channels, kernel, split_pw, use_rep, use_se, use_shortcut (PaddleClas NET_CONFIG)
NET_CONFIG = [(64, 3, False, False, False, False), (128, 3, False, False, False, False),
              (256, 5, True, True, True, False), (512, 5, False, True, False, True)]


class ConvBN(nn.Layer):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        conv = DepthwiseConv2D if groups > 1 and groups == cin == cout else nn.Conv2D
        self.conv = conv(cin, cout, k, stride, padding=(k - 1) // 2, groups=groups, bias_attr=False)
        self.bn = nn.BatchNorm2D(cout, momentum=0.9, epsilon=1e-5)
        self.act = nn.ReLU() if act else None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class SE(nn.Layer):
    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2D(c, c // reduction, 1)
        self.conv2 = nn.Conv2D(c // reduction, c, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.sigmoid(self.conv2(F.relu(self.conv1(s))))
        return x * s


class RepDWBlock(nn.Layer):
    """Depthwise-separable block with optional re-parameterisable depthwise branches, SE, split
    pointwise convs and a residual."""

    def __init__(self, cin: int, cout: int, stride: int, dw_size: int = 3, split_pw: bool = False,
                 use_rep: bool = False, use_se: bool = False, use_shortcut: bool = False) -> None:
        super().__init__()
        self.use_rep = use_rep
        self.is_repped = False
        self.dw_size = dw_size
        self.use_shortcut = use_shortcut and stride == 1 and cin == cout
        if use_rep:
            self.dw_conv_list = nn.LayerList([
                ConvBN(cin, cin, k, stride, groups=cin, act=False)
                for k in range(dw_size, 0, -2) if not (k == 1 and stride != 1)])
            self.dw_conv = nn.Conv2D(cin, cin, dw_size, stride, padding=(dw_size - 1) // 2, groups=cin)
        else:
            self.dw_conv = ConvBN(cin, cin, dw_size, stride, groups=cin)
        self.se = SE(cin) if use_se else None
        self.split_pw = split_pw
        if split_pw:
            self.pw_conv_1 = ConvBN(cin, cout // 2, 1)
            self.pw_conv_2 = ConvBN(cout // 2, cout, 1)
        else:
            self.pw_conv = ConvBN(cin, cout, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        identity = x
        if self.use_rep:
            if self.is_repped:
                x = F.relu(self.dw_conv(x))
            else:
                y = self.dw_conv_list[0](x)
                for branch in self.dw_conv_list[1:]:
                    y = y + branch(x)
                x = F.relu(y)
        else:
            x = self.dw_conv(x)
        if self.se is not None:
            x = self.se(x)
        x = self.pw_conv_2(self.pw_conv_1(x)) if self.split_pw else self.pw_conv(x)
        return x + identity if self.use_shortcut else x

    def reparameterize(self) -> None:
        """Fold each branch's BN into its conv, zero-pad to ``dw_size`` and sum into ``dw_conv``."""
        if not self.use_rep or self.is_repped:
            return
        weight, bias = 0.0, 0.0
        for branch in self.dw_conv_list:
            bn = branch.bn
            std = paddle.sqrt(bn._variance + bn._epsilon)
            w = branch.conv.weight * (bn.weight / std).reshape([-1, 1, 1, 1])
            b = bn.bias - bn._mean * bn.weight / std
            pad = (self.dw_size - w.shape[-1]) // 2
            weight = weight + F.pad(w, [pad, pad, pad, pad])
            bias = bias + b
        self.dw_conv.weight.set_value(weight)
        self.dw_conv.bias.set_value(bias)
        self.is_repped = True


class PPLCNetV2ShiTu(nn.Layer):
    """PPLCNetV2_base with the ShiTu changes: stage 4 stride 1, a 1x1 ``last_conv`` to the
    embedding size with bias and no activation, dropout in ``downscale_in_infer`` mode (x0.8 at
    inference, as upstream)."""

    def __init__(self, scale: float = 1.0, depths: Optional[List[int]] = None, embedding_size: int = 512,
                 dropout_prob: float = 0.2, stage4_stride: int = 1) -> None:
        super().__init__()
        depths = depths or [2, 2, 6, 2]

        def ch(c: float) -> int:
            return int(c * scale)

        self.stem = nn.Sequential(ConvBN(3, ch(32), 3, 2), RepDWBlock(ch(32), ch(64), 1, 3))
        stages = []
        for i, (cin, k, split_pw, use_rep, use_se, use_shortcut) in enumerate(NET_CONFIG):
            first_stride = stage4_stride if i == 3 else 2
            stages.append(nn.Sequential(*[
                RepDWBlock(ch(cin if j == 0 else cin * 2), ch(cin * 2), first_stride if j == 0 else 1, k,
                           split_pw, use_rep, use_se, use_shortcut) for j in range(depths[i])]))
        self.stages = nn.LayerList(stages)
        self.last_conv = nn.Conv2D(ch(NET_CONFIG[-1][0] * 2), embedding_size, 1)
        self.dropout = nn.Dropout(p=dropout_prob, mode="downscale_in_infer")

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        x = self.last_conv(F.adaptive_avg_pool2d(x, 1))
        return paddle.flatten(self.dropout(x), start_axis=1)


class BNNeck(nn.Layer):
    def __init__(self, num_features: int = 512) -> None:
        super().__init__()
        self.feat_bn = nn.BatchNorm1D(num_features, momentum=0.9, epsilon=1e-5,
                                      weight_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(1.0)),
                                      bias_attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0),
                                                                 learning_rate=1e-20))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.feat_bn(x)


class FCHead(nn.Layer):
    """Training classifier. The official checkpoints store a bias (``head.fc.bias``) although the
    recipe text says none; the layout here follows the checkpoints so they load unchanged."""

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes,
                            weight_attr=paddle.ParamAttr(initializer=nn.initializer.Normal(std=0.001)))

    def forward(self, x: paddle.Tensor, label: Optional[paddle.Tensor] = None) -> paddle.Tensor:
        return self.fc(x)


class PPShiTuV2Rec(RecModel):
    """backbone -> BNNeck (the feature) -> optional FC head (training only)."""

    def __init__(self, num_classes: Optional[int] = None, embedding_size: int = 512, **backbone_kw: object) -> None:
        super().__init__()
        self.backbone = PPLCNetV2ShiTu(embedding_size=embedding_size, **backbone_kw)  # type: ignore[arg-type]
        self.neck = BNNeck(embedding_size)
        self.head = FCHead(embedding_size, num_classes) if num_classes else None

    def reparameterize(self) -> None:
        for layer in self.sublayers():
            if isinstance(layer, RepDWBlock):
                layer.reparameterize()
