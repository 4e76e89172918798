"""Batch and head sharding of the primitives: custom_partitioning with a Shardy rule.

`na_fwd` / `na_bwd` bind na_fwd_p / na_bwd_p inside `custom_partitioning` (autodiff.py calls
these). On one device, or inside shard_map, that is just the primitive. Under `jax.jit` over
several devices XLA's partitioner asks the rules below how to split the op, and every shard
then runs the same kernel on its own slice with no collective:

- batch: sharded like query's batch dimension (key, value, dout, lse, out and dlse follow).
- heads: sharded like query's heads dimension. With n head shards and GQA, query head h and
  key/value head h // (heads // heads_kv) must meet on one device: when heads_kv % n == 0 the
  key/value heads split the same way (no collective); when n % heads_kv == 0 every shard's
  query heads share one kv head, so key/value stay replicated over the heads axes, each shard
  slices its head, and the backward all-reduces dk/dv over the shards of a group (inherent:
  those shards all contribute to that head's gradient); otherwise heads are replicated (the
  partitioner gathers them). The answer is exact in every case.
- spatial extents and head_dim: always replicated here. A sharded spatial axis is gathered
  first; for halo exchange instead use `jax_na.spatial_parallel`.

Shardy (the default partitioner) propagates with `sharding_rule`; GSPMD uses the
infer/propagate callbacks. Both end in `partition`, which picks the final shardings.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from .params import NAParams
from .primitives import fold_vmap_axis, na_bwd_p, na_fwd_p, unfold_vmap_axis


def _local_fwd(q, k, v, params: NAParams, backend: str):
    return tuple(na_fwd_p.bind(q, k, v, params=params, backend=backend))


def _local_bwd(q, k, v, dout, lse, out, dlse, params: NAParams, backend: str):
    return tuple(na_bwd_p.bind(q, k, v, dout, lse, out, dlse, params=params, backend=backend))


# --- choosing the shardings -------------------------------------------------------------------

def _axes(entry) -> tuple:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def head_layout(sharding, rank: int, heads_kv: int):
    """(batch entry, heads entry, kv heads sharded?) that the per-shard computation keeps.

    From a query sharding: spatial dims and head_dim are dropped (replicated). With n head
    shards, heads stay sharded when heads_kv % n == 0 (key/value heads split the same way) or
    n % heads_kv == 0 (each shard's query heads share one kv head: key/value stay replicated
    and each shard picks its head; the backward sums dk/dv over the shards of a group).
    Otherwise heads are replicated.
    """
    spec = tuple(sharding.spec) + (None,) * (rank + 3 - len(sharding.spec))
    batch, heads = spec[0], spec[rank + 1]
    n = math.prod(sharding.mesh.shape[a] for a in _axes(heads))
    if heads_kv % n == 0:
        return batch, heads, True
    if n % heads_kv == 0:
        return batch, heads, False
    return batch, None, True


class _Split:
    """The shardings of one call and the per-shard key/value head pick (see head_layout)."""

    def __init__(self, arg_shapes, params: NAParams):
        q, k = arg_shapes[0], arg_shapes[1]
        if not isinstance(q.sharding, NamedSharding):
            raise NotImplementedError(
                "jax_na sharding rules need NamedShardings (jit with NamedSharding inputs, or a mesh "
                f"context), got {type(q.sharding).__name__}")
        heads, heads_kv = q.shape[-2], k.shape[-2]
        batch, head_entry, kv_split = head_layout(q.sharding, params.rank, heads_kv)
        self.mesh = mesh = q.sharding.mesh
        spatial = (None,) * params.rank
        self.x = NamedSharding(mesh, P(batch, *spatial, head_entry, None))
        self.row = NamedSharding(mesh, P(batch, *spatial, head_entry))
        self.kv = NamedSharding(mesh, P(batch, *spatial, head_entry if kv_split else None, None))
        self.pick_axes = () if kv_split else _axes(head_entry)
        if self.pick_axes:
            shard_heads = heads // math.prod(mesh.shape[a] for a in self.pick_axes)
            self.shard_heads, self.group = shard_heads, heads // heads_kv

    def _first(self):
        return jax.lax.axis_index(self.pick_axes) * self.shard_heads // self.group

    def pick(self, kv):
        """This shard's one key/value head (all heads when kv heads are sharded)."""
        if not self.pick_axes:
            return kv
        return jax.lax.dynamic_slice_in_dim(kv, self._first(), 1, axis=-2)

    def unpick(self, dkv, like):
        """Gradient of `pick`: place the head, sum over the shards that share it."""
        if not self.pick_axes:
            return dkv
        full = jax.lax.dynamic_update_slice_in_dim(
            jnp.zeros(like.shape, jnp.float32), dkv.astype(jnp.float32), self._first(), axis=-2)
        return jax.lax.psum(full, self.pick_axes).astype(like.dtype)


# --- forward ----------------------------------------------------------------------------------

def _fwd_partition(params, backend, mesh, arg_shapes, result_shape):
    split = _Split(arg_shapes, params)

    def lower(q, k, v):
        return _local_fwd(q, split.pick(k), split.pick(v), params, backend)

    return split.mesh, lower, (split.x, split.row), (split.x, split.kv, split.kv)


def _fwd_infer(params, backend, mesh, arg_shapes, result_shape):
    split = _Split(arg_shapes, params)
    return split.x, split.row


def _fwd_propagate(params, backend, mesh, user_shape):
    return tuple(s.sharding for s in user_shape)


# --- backward ---------------------------------------------------------------------------------

def _bwd_partition(params, backend, mesh, arg_shapes, result_shape):
    split = _Split(arg_shapes, params)

    def lower(q, k, v, dout, lse, out, dlse):
        dq, dk, dv = _local_bwd(q, split.pick(k), split.pick(v), dout, lse, out, dlse, params, backend)
        return dq, split.unpick(dk, k), split.unpick(dv, v)

    x, kv, row = split.x, split.kv, split.row
    return split.mesh, lower, (x, kv, kv), (x, kv, kv, x, row, x, row)


def _bwd_infer(params, backend, mesh, arg_shapes, result_shape):
    split = _Split(arg_shapes, params)
    return split.x, split.kv, split.kv


def _bwd_propagate(params, backend, mesh, user_shape):
    return tuple(s.sharding for s in user_shape)


# --- Shardy rules -----------------------------------------------------------------------------

def _factors(params: NAParams, q_type, kv_type):
    """Einsum factors of [B, *S, H, D] query and key/value; kv heads share query's factor
    when heads == heads_kv, else are their own factor (partition keeps them consistent)."""
    spatial = " ".join(f"s{i}" for i in range(params.rank))
    same = q_type.shape[-2] == kv_type.shape[-2]
    q = f"b {spatial} h d"
    kv = q if same else f"b {spatial} g d"
    return q, kv, f"b {spatial} h", tuple(f"s{i}" for i in range(params.rank)) + ("d",)


def _fwd_rule(params, backend, mesh, value_types, result_types):
    q, kv, row, replicated = _factors(params, value_types[0], value_types[1])
    return f"{q}, {kv}, {kv} -> {q}, {row}", dict(need_replication_factors=replicated)


def _bwd_rule(params, backend, mesh, value_types, result_types):
    q, kv, row, replicated = _factors(params, value_types[0], value_types[1])
    rule = f"{q}, {kv}, {kv}, {q}, {row}, {q}, {row} -> {q}, {kv}, {kv}"
    return rule, dict(need_replication_factors=replicated)


partitioned_fwd = custom_partitioning(_local_fwd, static_argnums=(3, 4))
partitioned_fwd.def_partition(
    partition=_fwd_partition,
    infer_sharding_from_operands=_fwd_infer,
    propagate_user_sharding=_fwd_propagate,
    sharding_rule=_fwd_rule,
)
partitioned_bwd = custom_partitioning(_local_bwd, static_argnums=(7, 8))
partitioned_bwd.def_partition(
    partition=_bwd_partition,
    infer_sharding_from_operands=_bwd_infer,
    propagate_user_sharding=_bwd_propagate,
    sharding_rule=_bwd_rule,
)


# --- vmap: custom_partitioning has no batching rule, so fold the vmapped axis into batch -------
# (the primitives' own fold: batch-major, so a sharded batch stays evenly sharded).

@functools.lru_cache(maxsize=None)
def _batchable(direction: str, params: NAParams, backend: str):
    partitioned = partitioned_fwd if direction == "fwd" else partitioned_bwd

    @custom_vmap
    def call(*args):
        return partitioned(*args, params, backend)

    @call.def_vmap
    def rule(axis_size, in_batched, *args):
        folded = (fold_vmap_axis(a, 0 if b else None, axis_size) for a, b in zip(args, in_batched))
        outs = tuple(unfold_vmap_axis(o, axis_size) for o in call(*folded))
        return outs, (True,) * len(outs)

    return call


def na_fwd(q, k, v, params: NAParams, backend: str):
    """na_fwd_p with the batch/head sharding rules: (out, lse)."""
    return _batchable("fwd", params, backend)(q, k, v)


def na_bwd(q, k, v, dout, lse, out, dlse, params: NAParams, backend: str):
    """na_bwd_p with the batch/head sharding rules: (dq, dk, dv)."""
    return _batchable("bwd", params, backend)(q, k, v, dout, lse, out, dlse)
