"""Neighborhood-attention layers for Flax NNX: NeighborhoodAttention1D / 2D / 3D.

Arguments follow `flax.nnx.MultiHeadAttention` (num_heads, in_features, qkv_features,
out_features, use_bias, dropout_rate, dtype, param_dtype, precision, kernel_init, bias_init,
rngs) plus the neighbourhood (kernel_size, dilation, stride, is_causal) and jax_na's `backend`.
Inputs are `[*batch, *spatial, features]`; the math lives in `core.apply`.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
from flax import nnx

from . import core

default_kernel_init = nnx.initializers.lecun_normal()


class _Projection(nnx.Module):
    """Storage for one projection's kernel and bias (the math is in core.apply)."""

    def __init__(self, weights: dict):
        self.kernel = nnx.Param(weights["kernel"])
        self.bias = nnx.Param(weights["bias"]) if "bias" in weights else None

    def weights(self) -> dict:
        w = {"kernel": self.kernel[...]}
        if self.bias is not None:
            w["bias"] = self.bias[...]
        return w


class _NeighborhoodAttention(nnx.Module):
    rank: ClassVar[int]

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        qkv_features: int | None = None,
        out_features: int | None = None,
        *,
        kernel_size,
        dilation=1,
        stride=1,
        is_causal=False,
        scale: float | None = None,
        use_bias: bool = True,
        dropout_rate: float = 0.0,
        deterministic: bool | None = None,
        dtype=None,
        param_dtype=jnp.float32,
        precision=None,
        kernel_init=default_kernel_init,
        bias_init=nnx.initializers.zeros_init(),
        backend: str | None = None,
        rngs: nnx.Rngs,
    ):
        self.config = core.make_config(
            self.rank, num_heads, in_features, qkv_features, out_features,
            kernel_size=kernel_size, stride=stride, dilation=dilation, is_causal=is_causal,
            scale=scale, use_bias=use_bias, backend=backend,
        )
        self.in_features = in_features
        self.dtype = dtype
        self.precision = precision
        weights = core.init_weights(rngs.params(), in_features, self.config, kernel_init, bias_init, param_dtype)
        self.query = _Projection(weights["query"])
        self.key = _Projection(weights["key"])
        self.value = _Projection(weights["value"])
        self.out = _Projection(weights["out"])
        # Dropout acts on the layer output: fused kernels never materialise attention weights.
        self.dropout = nnx.Dropout(
            dropout_rate, deterministic=bool(deterministic), rngs=rngs if dropout_rate > 0 else None
        )

    def weights(self) -> dict:
        return {name: getattr(self, name).weights() for name in core.PROJECTIONS}

    def __call__(self, inputs, context=None, *, deterministic: bool | None = None, rngs=None):
        """inputs [*batch, *spatial, in_features] -> [*batch, *spatial, out_features].

        context: optional [*batch, n_extra, in_features] tokens attended by every query.
        deterministic / rngs: as for `nnx.Dropout` (only used when dropout_rate > 0).
        """
        y = core.apply(self.weights(), inputs, self.config, context=context, dtype=self.dtype, precision=self.precision)
        return self.dropout(y, deterministic=deterministic, rngs=rngs)


class NeighborhoodAttention1D(_NeighborhoodAttention):
    """1-D neighborhood attention over inputs [*batch, length, features]."""

    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    """2-D neighborhood attention over inputs [*batch, height, width, features]."""

    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    """3-D neighborhood attention over inputs [*batch, depth, height, width, features]."""

    rank = 3
