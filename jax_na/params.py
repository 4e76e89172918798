"""Argument normalisation and validation: every error a user can trigger is raised here.

`make_params` turns the public arguments into one frozen, hashable `NAParams` (the static
parameters of the primitives) after checking them against the array shapes, before anything
is traced into XLA. The rules are those of ../shared/na-semantics.md ("Errors").
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Sequence, Union

import jax.numpy as jnp
import numpy as np

IntOrTuple = Union[int, Sequence[int]]
BoolOrTuple = Union[bool, Sequence[bool]]

SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


@dataclasses.dataclass(frozen=True)
class NAParams:
    """Static parameters of one neighborhood-attention call, one entry per spatial dim."""

    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    is_causal: tuple[bool, ...]
    scale: float

    @property
    def rank(self) -> int:
        return len(self.kernel_size)


def _per_dim(name: str, value, rank: int, kind: type) -> tuple:
    """An int/bool or a sequence of them -> a tuple of length `rank`."""
    if kind is bool:
        ok = lambda x: isinstance(x, (bool, np.bool_))  # noqa: E731
        what = "a bool"
    else:
        ok = lambda x: isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))  # noqa: E731
        what = "an int"
    if ok(value):
        return (kind(value),) * rank
    if isinstance(value, (tuple, list)):
        if len(value) != rank:
            raise ValueError(
                f"{name} must be {what} or a sequence of {rank} (one per spatial dimension), "
                f"got {len(value)} values: {tuple(value)}"
            )
        if not all(ok(x) for x in value):
            raise TypeError(f"{name} must hold {what} per spatial dimension, got {tuple(value)}")
        return tuple(kind(x) for x in value)
    raise TypeError(f"{name} must be {what} or a sequence of them, got {type(value).__name__}")


def _check_dtype(name: str, x) -> None:
    if jnp.dtype(x.dtype) not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}; supported are float32, float16 and bfloat16")


def spatial_rank(query, expected_rank: int | None = None) -> int:
    """Spatial rank of a [batch, *spatial, heads, head_dim] query (1, 2 or 3)."""
    ndim = len(query.shape)
    rank = ndim - 3
    if expected_rank is not None and rank != expected_rank:
        raise ValueError(
            f"query must have rank {expected_rank + 3} ([batch, {expected_rank} spatial dims, heads, "
            f"head_dim]) for na{expected_rank}d, got shape {tuple(query.shape)}"
        )
    if rank not in (1, 2, 3):
        raise ValueError(
            "query must be [batch, *spatial, heads, head_dim] with 1, 2 or 3 spatial dims "
            f"(rank 4 to 6), got shape {tuple(query.shape)}"
        )
    return rank


def make_params(
    query,
    key,
    value,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    dilation: IntOrTuple = 1,
    is_causal: BoolOrTuple = False,
    scale: float | None = None,
    additional_keys=None,
    additional_values=None,
    expected_rank: int | None = None,
) -> NAParams:
    rank = spatial_rank(query, expected_rank)
    qs, ks, vs = tuple(query.shape), tuple(key.shape), tuple(value.shape)
    for name, shape in (("key", ks), ("value", vs)):
        if len(shape) != len(qs):
            raise ValueError(f"{name} must have the same rank as query ({len(qs)}), got shape {shape}")
        if shape[: rank + 1] != qs[: rank + 1]:
            raise ValueError(
                f"{name} must match query in batch and spatial extents {qs[: rank + 1]}, got {shape[: rank + 1]}"
            )
        if shape[-1] != qs[-1]:
            raise ValueError(f"{name} head_dim {shape[-1]} must equal query head_dim {qs[-1]}")
    if ks != vs:
        raise ValueError(f"key and value must have the same shape, got {ks} and {vs}")
    heads, heads_kv = qs[-2], ks[-2]
    if heads_kv < 1 or heads % heads_kv != 0:
        raise ValueError(
            f"query heads ({heads}) must be a multiple of key/value heads ({heads_kv}) (GQA/MQA)"
        )
    if qs[-1] < 1 or min(qs[: rank + 1]) < 1:
        raise ValueError(f"query must have non-empty batch, spatial and head_dim extents, got {qs}")
    for name, x in (("query", query), ("key", key), ("value", value)):
        _check_dtype(name, x)
    if not (jnp.dtype(key.dtype) == jnp.dtype(query.dtype) == jnp.dtype(value.dtype)):
        raise TypeError(
            f"query, key and value must share one dtype, got {query.dtype}, {key.dtype}, {value.dtype}"
        )

    ksz = _per_dim("kernel_size", kernel_size, rank, int)
    st = _per_dim("stride", stride, rank, int)
    dil = _per_dim("dilation", dilation, rank, int)
    causal = _per_dim("is_causal", is_causal, rank, bool)
    extents = qs[1 : rank + 1]
    for i in range(rank):
        if ksz[i] < 2:
            raise ValueError(f"kernel_size must be >= 2 in every dimension, got {ksz}")
        if dil[i] < 1:
            raise ValueError(f"dilation must be >= 1 in every dimension, got {dil}")
        if ksz[i] * dil[i] > extents[i]:
            raise ValueError(
                f"kernel_size * dilation must not exceed the spatial extent in dimension {i}: "
                f"{ksz[i]} * {dil[i]} > {extents[i]}"
            )
        if not 1 <= st[i] <= ksz[i]:
            raise ValueError(f"stride must satisfy 1 <= stride <= kernel_size, got stride {st} for kernel_size {ksz}")

    if scale is None:
        scale = float(qs[-1]) ** -0.5
    elif isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
    elif not np.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")

    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together (got only one)")
    if additional_keys is not None:
        aks, avs = tuple(additional_keys.shape), tuple(additional_values.shape)
        want = f"[batch={qs[0]}, n_extra, heads_kv={heads_kv}, head_dim={qs[-1]}]"
        for name, shape in (("additional_keys", aks), ("additional_values", avs)):
            if len(shape) != 4 or shape[0] != qs[0] or shape[2] != heads_kv or shape[3] != qs[-1] or shape[1] < 1:
                raise ValueError(f"{name} must have shape {want}, got {shape}")
        if aks != avs:
            raise ValueError(f"additional_keys and additional_values must have the same shape, got {aks} and {avs}")
        for name, x in (("additional_keys", additional_keys), ("additional_values", additional_values)):
            _check_dtype(name, x)
            if jnp.dtype(x.dtype) != jnp.dtype(query.dtype):
                raise TypeError(f"{name} dtype {x.dtype} must equal query dtype {query.dtype}")

    return NAParams(kernel_size=ksz, stride=st, dilation=dil, is_causal=causal, scale=float(scale))
