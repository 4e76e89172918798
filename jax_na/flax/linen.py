"""Neighborhood-attention layers for Flax Linen: NeighborhoodAttention1D / 2D / 3D.

Fields follow `flax.linen.MultiHeadDotProductAttention` (in_features is inferred at init).
The parameter tree equals the NNX layer's state ({query,key,value,out}: {kernel, bias}), so
weights copy across; the math is the same `core.apply`.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import jax.numpy as jnp
from flax import linen as nn

from . import core


class _NeighborhoodAttention(nn.Module):
    rank: ClassVar[int]

    num_heads: int
    kernel_size: Any
    qkv_features: int | None = None
    out_features: int | None = None
    dilation: Any = 1
    stride: Any = 1
    is_causal: Any = False
    scale: float | None = None
    use_bias: bool = True
    dropout_rate: float = 0.0
    deterministic: bool | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32
    precision: Any = None
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()
    backend: str | None = None

    @nn.compact
    def __call__(self, inputs, context=None, *, deterministic: bool | None = None):
        """inputs [*batch, *spatial, features] -> [*batch, *spatial, out_features].

        context: optional [*batch, n_extra, features] tokens attended by every query.
        Dropout (on the output) needs a 'dropout' rng when not deterministic.
        """
        in_features = inputs.shape[-1]
        cfg = core.make_config(
            self.rank, self.num_heads, in_features, self.qkv_features, self.out_features,
            kernel_size=self.kernel_size, stride=self.stride, dilation=self.dilation,
            is_causal=self.is_causal, scale=self.scale, use_bias=self.use_bias, backend=self.backend,
        )
        shapes = core.weight_shapes(in_features, cfg)
        weights = {
            name: self.param(name, core.init_projection, name, shapes[name], self.kernel_init, self.bias_init, self.param_dtype)
            for name in core.PROJECTIONS
        }
        y = core.apply(weights, inputs, cfg, context=context, dtype=self.dtype, precision=self.precision)
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic) if self.dropout_rate > 0 else True
        return nn.Dropout(self.dropout_rate)(y, deterministic=deterministic)


class NeighborhoodAttention1D(_NeighborhoodAttention):
    """1-D neighborhood attention over inputs [*batch, length, features]."""

    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    """2-D neighborhood attention over inputs [*batch, height, width, features]."""

    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    """3-D neighborhood attention over inputs [*batch, depth, height, width, features]."""

    rank = 3
