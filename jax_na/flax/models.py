"""NAT and DiNAT image classifiers in Flax NNX (Hassani et al. 2022; Hassani & Shi 2022).

Overlapping conv tokenizer (two 3x3 stride-2 convs, /4) -> stages of pre-norm blocks
(neighborhood attention + MLP, stochastic depth, optional layer scale), a 3x3 stride-2 conv
downsampler between stages -> LayerNorm, global average pool, linear head.

Differences from the published PyTorch models: no relative positional bias (jax_na computes
NATTEN 0.21's attention, which has none; the conv tokenizer carries position), and where a
stage's feature map is smaller than the kernel, the kernel shrinks to the map.
DiNAT's dilations alternate 1 and the largest d with kernel*d <= extent, per dimension,
which reproduces the published 224x224 schedule ([1,8,1], [1,4,1,4], [1,2,...], [1,1,...]).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from .nnx import NeighborhoodAttention2D

_List = getattr(nnx, "List", list)  # flax >= 0.12 wants module lists wrapped

_trunc_normal = nnx.initializers.truncated_normal(stddev=0.02)  # NAT's Linear init


@dataclasses.dataclass(frozen=True)
class NATConfig:
    """Model settings. `img_size` plans each stage's kernel and DiNAT dilations; the model
    runs at other sizes wherever kernel * dilation still fits every stage."""

    embed_dim: int = 64
    depths: tuple[int, ...] = (3, 4, 6, 5)
    num_heads: tuple[int, ...] = (2, 4, 8, 16)
    mlp_ratio: float = 3.0
    kernel_size: int = 7
    dilated: bool = False  # DiNAT's alternating dilation schedule
    img_size: int | tuple[int, int] = 224
    in_chans: int = 3
    num_classes: int = 1000
    drop_path_rate: float = 0.2
    layer_scale: float | None = None
    backend: str | None = None
    dtype: Any = None  # compute dtype (e.g. jnp.bfloat16); params stay param_dtype
    param_dtype: Any = jnp.float32

    def stage_extents(self) -> list[tuple[int, int]]:
        """Feature-map size of each stage: the tokenizer and each downsampler halve (ceil)."""
        h, w = (self.img_size, self.img_size) if isinstance(self.img_size, int) else self.img_size
        size = (math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2))
        out = []
        for _ in self.depths:
            out.append(size)
            size = tuple(math.ceil(e / 2) for e in size)
        return out

    def stage_kernels(self) -> list[tuple[int, int]]:
        kernels = []
        for i, ext in enumerate(self.stage_extents()):
            if min(ext) < 2:
                raise ValueError(
                    f"stage {i} feature map is {ext}: too small for neighborhood attention (needs >= 2 "
                    f"per side); use a larger img_size or fewer stages"
                )
            kernels.append(tuple(min(self.kernel_size, e) for e in ext))
        return kernels

    def dilations(self) -> list[list[tuple[int, int]]]:
        """Per stage, per block: the dilation of each block's attention."""
        out = []
        for depth, ext, kern in zip(self.depths, self.stage_extents(), self.stage_kernels()):
            widest = tuple(max(1, e // k) for e, k in zip(ext, kern))
            out.append([widest if (self.dilated and j % 2) else (1, 1) for j in range(depth)])
        return out


class Mlp(nnx.Module):
    def __init__(self, dim: int, hidden: int, cfg: NATConfig, rngs: nnx.Rngs):
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, kernel_init=_trunc_normal, rngs=rngs)
        self.fc1 = nnx.Linear(dim, hidden, **kw)
        self.fc2 = nnx.Linear(hidden, dim, **kw)

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class NATLayer(nnx.Module):
    """Pre-norm block: x + drop_path(gamma1 * NA(LN(x))), then x + drop_path(gamma2 * MLP(LN(x)))."""

    def __init__(self, dim, heads, kernel_size, dilation, drop_path, cfg: NATConfig, rngs: nnx.Rngs):
        norm = dict(epsilon=1e-5, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.norm1 = nnx.LayerNorm(dim, **norm)
        self.attn = NeighborhoodAttention2D(
            heads, dim, kernel_size=kernel_size, dilation=dilation, dtype=cfg.dtype,
            param_dtype=cfg.param_dtype, kernel_init=_trunc_normal, backend=cfg.backend, rngs=rngs,
        )
        self.norm2 = nnx.LayerNorm(dim, **norm)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg, rngs)
        # Stochastic depth = dropout whose mask is shared by all of a sample's elements.
        self.drop_path = nnx.Dropout(drop_path, broadcast_dims=(1, 2, 3), rngs=rngs if drop_path > 0 else None)
        if cfg.layer_scale is not None:
            self.gamma1 = nnx.Param(jnp.full((dim,), cfg.layer_scale, cfg.param_dtype))
            self.gamma2 = nnx.Param(jnp.full((dim,), cfg.layer_scale, cfg.param_dtype))
        else:
            self.gamma1 = self.gamma2 = None

    def _scaled(self, y, gamma):
        return y if gamma is None else y * gamma[...].astype(y.dtype)

    def __call__(self, x, *, deterministic=None, rngs=None):
        y = self._scaled(self.attn(self.norm1(x)), self.gamma1)
        x = x + self.drop_path(y, deterministic=deterministic, rngs=rngs)
        y = self._scaled(self.mlp(self.norm2(x)), self.gamma2)
        return x + self.drop_path(y, deterministic=deterministic, rngs=rngs)


class ConvDown(nnx.Module):
    """3x3 stride-2 conv (padding 1) followed by LayerNorm."""

    def __init__(self, in_dim, out_dim, cfg: NATConfig, rngs: nnx.Rngs):
        self.conv = nnx.Conv(in_dim, out_dim, (3, 3), (2, 2), padding=((1, 1), (1, 1)),
                             dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.norm = nnx.LayerNorm(out_dim, epsilon=1e-5, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.conv(x))


class ConvTokenizer(nnx.Module):
    """Two overlapping 3x3 stride-2 convs: [B, H, W, C] -> [B, H/4, W/4, embed_dim]."""

    def __init__(self, cfg: NATConfig, rngs: nnx.Rngs):
        kw = dict(padding=((1, 1), (1, 1)), dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.conv1 = nnx.Conv(cfg.in_chans, cfg.embed_dim // 2, (3, 3), (2, 2), **kw)
        self.conv2 = nnx.Conv(cfg.embed_dim // 2, cfg.embed_dim, (3, 3), (2, 2), **kw)
        self.norm = nnx.LayerNorm(cfg.embed_dim, epsilon=1e-5, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)

    def __call__(self, x):
        return self.norm(self.conv2(self.conv1(x)))


class NAT(nnx.Module):
    """NAT / DiNAT classifier. Input [B, H, W, in_chans] (channels last), output logits."""

    def __init__(self, cfg: NATConfig, *, rngs: nnx.Rngs):
        if len(cfg.depths) != len(cfg.num_heads):
            raise ValueError(f"depths {cfg.depths} and num_heads {cfg.num_heads} must have one entry per stage")
        self.cfg = cfg
        self.tokenizer = ConvTokenizer(cfg, rngs)
        rates = [cfg.drop_path_rate * i / max(1, sum(cfg.depths) - 1) for i in range(sum(cfg.depths))]
        stages, downs, dim, n = [], [], cfg.embed_dim, 0
        for i, (depth, heads, kernel, dils) in enumerate(
            zip(cfg.depths, cfg.num_heads, cfg.stage_kernels(), cfg.dilations())
        ):
            stages.append(_List([NATLayer(dim, heads, kernel, dils[j], rates[n + j], cfg, rngs) for j in range(depth)]))
            n += depth
            if i < len(cfg.depths) - 1:
                downs.append(ConvDown(dim, 2 * dim, cfg, rngs))
                dim *= 2
        self.stages = _List(stages)
        self.downsamples = _List(downs)
        self.num_features = dim
        self.norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.head = nnx.Linear(dim, cfg.num_classes, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                               kernel_init=_trunc_normal, rngs=rngs)

    def forward_features(self, x, *, deterministic=None, rngs=None) -> list:
        """Feature maps [B, h_i, w_i, dim_i] at the end of every stage (a backbone's outputs)."""
        x = self.tokenizer(x)
        feats = []
        for i, stage in enumerate(self.stages):
            for layer in stage:
                x = layer(x, deterministic=deterministic, rngs=rngs)
            feats.append(x)
            if i < len(self.downsamples):
                x = self.downsamples[i](x)
        return feats

    def __call__(self, x, *, deterministic=None, rngs=None):
        x = self.forward_features(x, deterministic=deterministic, rngs=rngs)[-1]
        return self.head(self.norm(x).mean(axis=(1, 2)))


# --- presets ---------------------------------------------------------------------------------
# Published ImageNet-1k mini/tiny settings (NAT and DiNAT share them; DiNAT adds dilation).
PRESETS: dict[str, dict] = {
    "nat_mini": dict(embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0, drop_path_rate=0.2),
    "nat_tiny": dict(embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0, drop_path_rate=0.2),
    "dinat_mini": dict(embed_dim=64, depths=(3, 4, 6, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
                       drop_path_rate=0.2, dilated=True),
    "dinat_tiny": dict(embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), mlp_ratio=3.0,
                       drop_path_rate=0.2, dilated=True),
    # Trains in a minute or two on a laptop CPU: 32x32 inputs -> 8x8 and 4x4 token maps.
    "tiny": dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0, kernel_size=3,
                 drop_path_rate=0.0, dilated=True, img_size=32),
}


def create_model(name: str, *, rngs: nnx.Rngs, **overrides) -> NAT:
    """A preset by name, with any NATConfig field overridden (num_classes, img_size, dtype...)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; presets are {sorted(PRESETS)}")
    return NAT(NATConfig(**{**PRESETS[name], **overrides}), rngs=rngs)


def nat_mini(*, rngs: nnx.Rngs, **overrides) -> NAT:
    return create_model("nat_mini", rngs=rngs, **overrides)


def nat_tiny(*, rngs: nnx.Rngs, **overrides) -> NAT:
    return create_model("nat_tiny", rngs=rngs, **overrides)


def dinat_mini(*, rngs: nnx.Rngs, **overrides) -> NAT:
    return create_model("dinat_mini", rngs=rngs, **overrides)


def dinat_tiny(*, rngs: nnx.Rngs, **overrides) -> NAT:
    return create_model("dinat_tiny", rngs=rngs, **overrides)


def tiny(*, rngs: nnx.Rngs, **overrides) -> NAT:
    return create_model("tiny", rngs=rngs, **overrides)
