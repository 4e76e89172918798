"""The math of a neighborhood-attention layer, written once and shared by the NNX and Linen
layers of every rank.

A layer is: project `[*batch, *spatial, in]` tokens to per-head q/k/v, run
`jax_na.neighborhood_attention`, project the heads back to `out` features. The weights are a
plain nested dict with Flax's `MultiHeadAttention` shapes, so both frameworks hold the same
tree and weights copy across unchanged:

    query/key/value: kernel [in, heads, head_dim], bias [heads, head_dim]
    out:             kernel [heads, head_dim, out], bias [out]
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..api import neighborhood_attention

PROJECTIONS = ("query", "key", "value", "out")


@dataclasses.dataclass(frozen=True)
class LayerConfig:
    """Static (hashable) settings of one layer: everything but the weights and the inputs."""

    rank: int
    num_heads: int
    qkv_features: int
    out_features: int
    kernel_size: Any
    stride: Any = 1
    dilation: Any = 1
    is_causal: Any = False
    scale: float | None = None
    use_bias: bool = True
    backend: str | None = None

    def __post_init__(self):
        if self.num_heads < 1 or self.qkv_features < 1 or self.qkv_features % self.num_heads:
            raise ValueError(
                f"qkv_features ({self.qkv_features}) must be a positive multiple of num_heads ({self.num_heads})"
            )

    @property
    def head_dim(self) -> int:
        return self.qkv_features // self.num_heads


def make_config(rank, num_heads, in_features, qkv_features=None, out_features=None, **settings) -> LayerConfig:
    """Flax's defaults: qkv_features and out_features fall back to in_features."""
    # Lists are unhashable; the config must be a valid static argument.
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    return LayerConfig(
        rank=rank,
        num_heads=num_heads,
        qkv_features=in_features if qkv_features is None else qkv_features,
        out_features=in_features if out_features is None else out_features,
        **settings,
    )


def weight_shapes(in_features: int, cfg: LayerConfig) -> dict[str, dict[str, tuple[int, ...]]]:
    h, d = cfg.num_heads, cfg.head_dim
    shapes = {name: {"kernel": (in_features, h, d)} for name in PROJECTIONS[:3]}
    shapes["out"] = {"kernel": (h, d, cfg.out_features)}
    if cfg.use_bias:
        for name in PROJECTIONS[:3]:
            shapes[name]["bias"] = (h, d)
        shapes["out"]["bias"] = (cfg.out_features,)
    return shapes


def init_projection(rng, name: str, shapes: Mapping, kernel_init: Callable, bias_init: Callable, param_dtype) -> dict:
    """One projection's {kernel[, bias]}. The kernel is initialised as the 2-D matrix it acts
    as (fan-in = contracted features), then reshaped, as Flax's LinearGeneral does."""
    k_rng, b_rng = jax.random.split(rng)
    kshape = shapes["kernel"]
    n_in = 2 if name == "out" else 1  # out contracts (heads, head_dim); q/k/v contract features
    flat = (int(np.prod(kshape[:n_in])), int(np.prod(kshape[n_in:])))
    weights = {"kernel": kernel_init(k_rng, flat, param_dtype).reshape(kshape)}
    if "bias" in shapes:
        bshape = shapes["bias"]
        weights["bias"] = bias_init(b_rng, (int(np.prod(bshape)),), param_dtype).reshape(bshape)
    return weights


def init_weights(rng, in_features: int, cfg: LayerConfig, kernel_init, bias_init, param_dtype) -> dict:
    shapes = weight_shapes(in_features, cfg)
    rngs = jax.random.split(rng, len(PROJECTIONS))
    return {n: init_projection(r, n, shapes[n], kernel_init, bias_init, param_dtype) for n, r in zip(PROJECTIONS, rngs)}


def _project(x, weights, spec: str, precision):
    y = jnp.einsum(spec, x, weights["kernel"], precision=precision)
    return y + weights["bias"] if "bias" in weights else y


def apply(weights: Mapping, x, cfg: LayerConfig, *, context=None, dtype=None, precision=None):
    """The layer's output [*batch, *spatial, out_features] for inputs [*batch, *spatial, in].

    Leading batch dims may be any number (none under `jax.vmap` of single examples): they are
    folded into one for the attention call. `context` [*batch, n_extra, in] adds tokens every
    query attends to; they go through the key/value projections. Computation runs in `dtype`
    (default: the promoted dtype of inputs and weights); the attention accumulates in float32.
    """
    x = jnp.asarray(x)
    if x.ndim < cfg.rank + 1:
        raise ValueError(
            f"inputs must be [*batch, {cfg.rank} spatial dims, features], got shape {tuple(x.shape)}"
        )
    batch = x.shape[: x.ndim - cfg.rank - 1]
    spatial = x.shape[len(batch) : -1]
    leaves = [x] + jax.tree_util.tree_leaves(weights) + ([] if context is None else [context])
    dtype = jnp.result_type(*leaves) if dtype is None else dtype
    weights = jax.tree_util.tree_map(lambda w: jnp.asarray(w, dtype), weights)
    x = x.astype(dtype).reshape((-1,) + spatial + x.shape[-1:])

    q = _project(x, weights["query"], "...i,ihd->...hd", precision)
    k = _project(x, weights["key"], "...i,ihd->...hd", precision)
    v = _project(x, weights["value"], "...i,ihd->...hd", precision)
    extra_k = extra_v = None
    if context is not None:
        context = jnp.asarray(context, dtype)
        if context.ndim != len(batch) + 2 or context.shape[: len(batch)] != batch:
            raise ValueError(
                f"context must be [*batch={batch}, n_extra, features], got shape {tuple(context.shape)}"
            )
        context = context.reshape((-1,) + context.shape[-2:])
        extra_k = _project(context, weights["key"], "...i,ihd->...hd", precision)
        extra_v = _project(context, weights["value"], "...i,ihd->...hd", precision)

    y = neighborhood_attention(
        q, k, v, cfg.kernel_size,
        stride=cfg.stride, dilation=cfg.dilation, is_causal=cfg.is_causal, scale=cfg.scale,
        additional_keys=extra_k, additional_values=extra_v, backend=cfg.backend,
    )
    out = _project(y, weights["out"], "...hd,hdo->...o", precision)
    return out.reshape(batch + spatial + (cfg.out_features,))
