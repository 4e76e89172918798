"""Spatial (context) parallelism: spatial dims sharded over mesh axes, halos via ppermute.

Each device holds a slab of m = L / n coordinates of a sharded spatial dim. Its queries need
keys from a global interval a little wider than the slab; `halo_widths` finds, from the global
window math (reference.neighbor_table: windows clamped at the GLOBAL borders, global dilation
groups and stride leaders), the most any shard needs on the left and on the right. Each device
receives exactly that many rows of keys/values from its two neighbours (one `ppermute` per
direction and sharded dim; none to the right when causal), then attends its own queries with
an explicit per-query key window: the global neighbour table rows of its queries, shifted into
the local buffer. So the result is exactly the unsharded one. Several sharded dims exchange in
turn (dim 0, then dim 1 on the extended buffer), which also brings the corners.

What runs per device: the exact gather formulation in XLA (like reference.py), which JAX
differentiates; the backward of each ppermute is the ppermute that sends the halo gradients
back. The native kernels are not used here: they would need an offset key window.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from .merge import merge_attentions
from .params import make_params
from .reference import dense_attention, neighbor_table

_HI = jax.lax.Precision.HIGHEST


def halo_widths(extent: int, shards: int, kernel: int, stride: int, dilation: int, causal: bool):
    """(left, right): keys a shard of one dim needs beyond its slab, the max over all shards."""
    coords, valid = neighbor_table(extent, kernel, stride, dilation, causal)
    m = extent // shards
    start = np.arange(shards)[:, None] * m
    c = coords.reshape(shards, m * kernel)
    ok = valid.reshape(shards, m * kernel)
    lo = np.where(ok, c, extent).min(axis=1)
    hi = np.where(ok, c, -1).max(axis=1) + 1
    return int(np.max(start[:, 0] - lo)), int(np.max(hi - start[:, 0] - m))


def _axis_size(mesh, axis) -> int:
    if axis is None:
        return 1
    if axis not in mesh.shape:
        raise ValueError(f"mesh has no axis {axis!r}; its axes are {tuple(mesh.axis_names)}")
    return mesh.shape[axis]


def _plan(q_shape, kv_heads, params, mesh, spatial_axes, batch_axis, heads_axis):
    """Per spatial dim: (axis, shards, left halo, right halo). Raises on impossible layouts."""
    rank = params.rank
    if isinstance(spatial_axes, str) or spatial_axes is None:
        spatial_axes = (spatial_axes,) + (None,) * (rank - 1)
    spatial_axes = tuple(spatial_axes)
    if len(spatial_axes) != rank:
        raise ValueError(f"spatial_axes must name a mesh axis (or None) per spatial dim ({rank}), got {spatial_axes}")
    used = [a for a in spatial_axes + (batch_axis, heads_axis) if a is not None]
    if len(used) != len(set(used)):
        raise ValueError(f"each mesh axis may shard one dimension only, got spatial_axes={spatial_axes}, "
                         f"batch_axis={batch_axis!r}, heads_axis={heads_axis!r}")
    nb, nh = _axis_size(mesh, batch_axis), _axis_size(mesh, heads_axis)
    if q_shape[0] % nb:
        raise ValueError(f"batch {q_shape[0]} must be divisible by the size {nb} of batch_axis {batch_axis!r}")
    if q_shape[-2] % nh or kv_heads % nh:
        raise ValueError(f"heads ({q_shape[-2]}) and key/value heads ({kv_heads}) must both be divisible by the "
                         f"size {nh} of heads_axis {heads_axis!r} (GQA groups stay on one device)")
    plan = []
    for i, axis in enumerate(spatial_axes):
        n, extent = _axis_size(mesh, axis), q_shape[1 + i]
        if extent % n:
            raise ValueError(f"spatial extent {extent} of dimension {i} must be divisible by the size {n} "
                             f"of mesh axis {axis!r} (spatial_axes[{i}])")
        left, right = halo_widths(extent, n, params.kernel_size[i], params.stride[i], params.dilation[i],
                                  params.is_causal[i]) if n > 1 else (0, 0)
        if max(left, right) > extent // n:
            raise ValueError(
                f"halo of dimension {i} ({left} left, {right} right, from kernel_size {params.kernel_size[i]}, "
                f"dilation {params.dilation[i]}, stride {params.stride[i]}) exceeds the shard extent "
                f"{extent // n} = {extent} / {n} devices on mesh axis {axis!r}; halos come from the neighbouring "
                "shard only: use fewer shards along this axis")
        plan.append((axis, n, left, right))
    return tuple(plan)


def _exchange(x, dim: int, axis, n: int, left: int, right: int):
    """x extended along `dim` by `left` rows from the previous shard and `right` from the next."""
    m = x.shape[dim]
    parts = []
    if left:
        tail = jax.lax.slice_in_dim(x, m - left, m, axis=dim)
        parts.append(jax.lax.ppermute(tail, axis, [(j, j + 1) for j in range(n - 1)]))
    parts.append(x)
    if right:
        head = jax.lax.slice_in_dim(x, 0, right, axis=dim)
        parts.append(jax.lax.ppermute(head, axis, [(j + 1, j) for j in range(n - 1)]))
    return jnp.concatenate(parts, axis=dim) if len(parts) > 1 else x


def _local_tables(params, extents, plan, buffer_extents):
    """Per dim: local key indices [m_i, k_i] into the halo-extended buffer, and validity."""
    rank = params.rank
    idx, mask = [], jnp.ones((), bool)
    for i, (axis, n, left, _) in enumerate(plan):
        coords, valid = neighbor_table(extents[i], params.kernel_size[i], params.stride[i],
                                       params.dilation[i], params.is_causal[i])
        m = extents[i] // n
        c, v = jnp.asarray(coords), jnp.asarray(valid)
        if n > 1:
            j = jax.lax.axis_index(axis)
            c = jax.lax.dynamic_slice_in_dim(c, j * m, m) - (j * m - left)
            v = jax.lax.dynamic_slice_in_dim(v, j * m, m)
        shape = [1] * (2 * rank)
        shape[i], shape[rank + i] = m, params.kernel_size[i]
        idx.append(jnp.clip(c, 0, buffer_extents[i] - 1).reshape(shape))
        mask = mask & v.reshape(shape)
    return idx, mask


def _attend(q, k, v, idx, mask, scale):
    """Attention of local queries to their explicit key windows -> (out, lse), float32 math."""
    b, *spatial, h, d = q.shape
    hkv = k.shape[-2]
    n, kk = math.prod(spatial), math.prod(mask.shape[len(spatial):])
    f32 = jnp.float32
    kg = k.astype(f32)[(slice(None), *idx)].reshape(b, n, kk, hkv, d)
    vg = v.astype(f32)[(slice(None), *idx)].reshape(b, n, kk, hkv, d)
    fq = q.astype(f32).reshape(b, n, hkv, h // hkv, d)
    s = jnp.einsum("bnhgd,bnjhd->bnhgj", fq, kg, precision=_HI) * scale
    s = jnp.where(mask.reshape(n, kk)[None, :, None, None, :], s, -jnp.inf)
    lse = jax.nn.logsumexp(s, axis=-1)
    out = jnp.einsum("bnhgj,bnjhd->bnhgd", jnp.exp(s - lse[..., None]), vg, precision=_HI)
    return out.reshape(q.shape).astype(q.dtype), lse.reshape(b, *spatial, h)


def spatial_parallel(query, key, value, kernel_size, *, mesh, spatial_axes, batch_axis=None, heads_axis=None,
                     stride=1, dilation=1, is_causal=False, scale=None, additional_keys=None,
                     additional_values=None, return_lse=False):
    """Neighborhood attention with spatial dims sharded over mesh axes (halo exchange).

    Same arguments and result as `jax_na.neighborhood_attention`, plus the layout:
      mesh: a jax.sharding.Mesh.
      spatial_axes: a mesh axis name (or None) per spatial dim; a single name shards dim 0.
      batch_axis, heads_axis: optional mesh axes for batch and heads (heads and key/value heads
        must both divide by the heads axis size).
    The result is sharded the same way. Every shard extent must divide evenly, and the halo a
    shard needs (see `halo_widths`) must not exceed the shard extent.
    """
    params = make_params(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                         additional_keys, additional_values)
    plan = _plan(tuple(query.shape), key.shape[-2], params, mesh, spatial_axes, batch_axis, heads_axis)
    rank, extents = params.rank, tuple(query.shape[1:-2])
    x_spec = P(batch_axis, *(a for a, *_ in plan), heads_axis, None)
    row_spec = P(batch_axis, *(a for a, *_ in plan), heads_axis)
    extra = additional_keys is not None
    extra_spec = (P(batch_axis, None, heads_axis, None),) * 2 if extra else ()

    def local(q, k, v, *extra_kv):
        hkv = k.shape[-2]
        kv = jnp.concatenate([k, v], axis=-2)  # one exchange carries both
        for i, (axis, n, left, right) in enumerate(plan):
            if n > 1:
                kv = _exchange(kv, 1 + i, axis, n, left, right)
        idx, mask = _local_tables(params, extents, plan, kv.shape[1 : 1 + rank])
        out, lse = _attend(q, kv[..., :hkv, :], kv[..., hkv:, :], idx, mask, params.scale)
        if extra_kv:
            dense = dense_attention(q, *extra_kv, params.scale)
            out, lse = merge_attentions([out, dense[0]], [lse, dense[1]])
        return out, lse

    run = jax.shard_map(local, mesh=mesh, in_specs=(x_spec,) * 3 + extra_spec, out_specs=(x_spec, row_spec))
    args = (query, key, value) + ((additional_keys, additional_values) if extra else ())
    out, lse = run(*args)
    return (out, lse) if return_lse else out
