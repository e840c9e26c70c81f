"""PP-ShiTuV2_rec_CLIP_vit_{base,large}: CLIP ViT -> Linear neck -> ArcMargin head (training only).

Sizes come from the config (the reference fixtures use D=64, depth 2, 2 heads). Token pooling
differs between the two official models and is a config flag: base drops the class token before
the final LayerNorm and averages the patch tokens; large keeps it and averages all tokens.
"""
from __future__ import annotations

import math
from typing import Optional

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from imgfeat_cli.models.base import RecModel


class Attention(nn.Layer):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape([b, n, 3, self.num_heads, c // self.num_heads]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.softmax(paddle.matmul(q * self.scale, k, transpose_y=True), axis=-1)
        out = paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([b, n, c])
        return self.proj(out)


class Mlp(nn.Layer):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Layer):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=1e-5)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, epsilon=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Layer):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2D(3, dim, patch, patch, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.proj(x).flatten(2).transpose([0, 2, 1])


class CLIPViT(nn.Layer):
    def __init__(self, img_size: int = 224, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, output_dim: int = 512, keep_cls_token: bool = False) -> None:
        super().__init__()
        grid = img_size // patch_size
        self.keep_cls_token = keep_cls_token
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        scale = embed_dim ** -0.5
        self.cls_token = self.create_parameter([1, 1, embed_dim], default_initializer=nn.initializer.Normal(std=scale))
        self.pos_embed = self.create_parameter([1, 1 + grid * grid, embed_dim],
                                               default_initializer=nn.initializer.Normal(std=scale))
        self.ln_pre = nn.LayerNorm(embed_dim, epsilon=1e-5)
        self.blocks = nn.LayerList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, epsilon=1e-5)
        self.proj = self.create_parameter([embed_dim, output_dim], default_initializer=nn.initializer.Normal(std=scale))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.patch_embed(x)
        cls = self.cls_token.expand([x.shape[0], -1, -1])
        x = paddle.concat([cls, x], axis=1) + self.pos_embed
        x = self.ln_pre(x)
        for blk in self.blocks:
            x = blk(x)
        if not self.keep_cls_token:
            x = x[:, 1:, :]
        x = paddle.matmul(self.norm(x), self.proj)
        return x.mean(axis=1)


class ArcMargin(nn.Layer):
    """Additive angular margin logits (margin 0.2, scale 30); ``weight`` is [embedding, classes]."""

    def __init__(self, embedding_size: int, num_classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        self.margin, self.scale = margin, scale
        self.weight = self.create_parameter([embedding_size, num_classes],
                                            default_initializer=nn.initializer.XavierNormal())

    def forward(self, x: paddle.Tensor, label: Optional[paddle.Tensor] = None) -> paddle.Tensor:
        cos = paddle.matmul(F.normalize(x, axis=1), F.normalize(self.weight, axis=0))
        if label is None or not self.training:
            return cos * self.scale
        sin = paddle.sqrt(paddle.clip(1.0 - cos * cos, min=1e-12))
        phi = cos * math.cos(self.margin) - sin * math.sin(self.margin)
        th, mm = math.cos(math.pi - self.margin), math.sin(math.pi - self.margin) * self.margin
        phi = paddle.where(cos > th, phi, cos - mm)
        one_hot = F.one_hot(label.reshape([-1]), cos.shape[1])
        return (one_hot * phi + (1.0 - one_hot) * cos) * self.scale


class NeckFC(nn.Layer):
    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc(x)


class CLIPRec(RecModel):
    """CLIP ViT -> Linear neck (the feature) -> optional ArcMargin head (training only)."""

    def __init__(self, num_classes: Optional[int] = None, embedding_size: int = 512, **vit_kw: object) -> None:
        super().__init__()
        self.backbone = CLIPViT(output_dim=embedding_size, **vit_kw)  # type: ignore[arg-type]
        self.neck = NeckFC(embedding_size)
        self.head = ArcMargin(embedding_size, num_classes) if num_classes else None
