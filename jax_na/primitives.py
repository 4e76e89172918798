"""The forward and backward primitives: abstract evaluation, batching and lowering.

na_fwd_p(q, k, v)                         -> (out, lse)
na_bwd_p(q, k, v, dout, lse, out, dlse)   -> (dq, dk, dv)

Static params: `params` (NAParams) and `backend` (a backend name or "auto"). Each platform's
lowering emits a jax.ffi custom call to the chosen native family; platforms without one (or
"auto" with no native family) lower the reference math instead, so every backend enters the
same way. A CUDA custom call has one more result than the primitive, a uint32[3] flag buffer:
the flag its handler uses to repair what tiled kernels do to NaN/Inf operands
(cuda/repair/repair.h), and the counter persistent kernels hand out their tiles with. The
lowering adds it (an XLA-owned buffer, so CUDA graphs stay valid) and drops it.

The backward's kernels need delta = rowsum(dout * out) - dlse (dS = P (dP - delta) covers both
cotangents). The lowering computes it with XLA and passes it to the family's handler in place of
(out, dlse), except for cuda-hopper where its rule says that forming delta in the dQ kernel pays
(_native.hopper_rd_pays): that handler takes (out, dlse), and has one more result before the
flag, the float32 delta its dQ kernel writes for its dK/dV kernel, added and dropped likewise.
"""

from __future__ import annotations

import functools

import numpy as np
import jax
import jax.numpy as jnp
from jax.extend import core as jex_core
from jax.interpreters import batching, mlir

from . import _native, backends, reference, tuning
from .params import NAParams

_FLAG_WORDS = 3  # cuda/repair/repair.h kFlagWords

na_fwd_p = jex_core.Primitive("jax_na_fwd")
na_fwd_p.multiple_results = True
na_bwd_p = jex_core.Primitive("jax_na_bwd")
na_bwd_p.multiple_results = True


# --- abstract evaluation ---------------------------------------------------------------------

# Output avals are derived from an input's aval with .update(), which keeps its manual-axis
# (shard_map) type: a gradient must have exactly the type of its primal input.

def _fwd_abstract(q, k, v, *, params: NAParams, backend: str):
    return q.update(shape=q.shape, dtype=q.dtype), q.update(shape=q.shape[:-1], dtype=jnp.dtype(jnp.float32))


def _bwd_abstract(q, k, v, dout, lse, out, dlse, *, params: NAParams, backend: str):
    return tuple(x.update(shape=x.shape, dtype=x.dtype) for x in (q, k, v))


na_fwd_p.def_abstract_eval(_fwd_abstract)
na_bwd_p.def_abstract_eval(_bwd_abstract)


def _impl(prim):
    # One jitted program per static parameter set, so eager calls compile once, not every call.
    @functools.lru_cache(maxsize=256)
    def compiled(params: NAParams, backend: str):
        return jax.jit(lambda *a: prim.bind(*a, params=params, backend=backend))

    def impl(*args, params: NAParams, backend: str):
        return compiled(params, backend)(*args)

    return impl


na_fwd_p.def_impl(_impl(na_fwd_p))
na_bwd_p.def_impl(_impl(na_bwd_p))


# --- batching: fold the vmapped axis into batch (never a loop) -------------------------------
# Batch-major ([B, V] -> B*V), so a sharded batch dimension stays evenly sharded after the fold.

def fold_vmap_axis(a, axis, size: int):
    """[.., V at `axis`, ..] (axis None: unbatched, broadcast) -> [B*V, ...]."""
    a = jnp.broadcast_to(a[:, None], (a.shape[0], size) + a.shape[1:]) if axis is None else jnp.moveaxis(a, axis, 1)
    return a.reshape((a.shape[0] * size,) + a.shape[2:])


def unfold_vmap_axis(x, size: int):
    """Inverse of fold_vmap_axis for an output: [B*V, ...] -> [V, B, ...]."""
    return jnp.moveaxis(x.reshape((x.shape[0] // size, size) + x.shape[1:]), 1, 0)


def _batch_rule(prim):
    def rule(args, dims, **kw):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        outs = prim.bind(*(fold_vmap_axis(a, d, size) for a, d in zip(args, dims)), **kw)
        return [unfold_vmap_axis(o, size) for o in outs], [0] * len(outs)

    return rule


batching.primitive_batchers[na_fwd_p] = _batch_rule(na_fwd_p)
batching.primitive_batchers[na_bwd_p] = _batch_rule(na_bwd_p)


# --- lowering --------------------------------------------------------------------------------

def _ffi_attrs(params: NAParams) -> dict:
    return dict(
        kernel_size=np.asarray(params.kernel_size, np.int64),
        stride=np.asarray(params.stride, np.int64),
        dilation=np.asarray(params.dilation, np.int64),
        is_causal=np.asarray(params.is_causal, np.int64),
        scale=np.float32(params.scale),
    )


def _fwd_fallback(q, k, v, *, params, backend):
    return reference.na_reference(q, k, v, params)


def _delta(dout, out, dlse):
    """delta = rowsum(dout * out) - dlse, in float32 (lse's shape)."""
    return jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), axis=-1) - dlse


def _bwd_fallback(q, k, v, dout, lse, out, dlse, *, params, backend):
    return reference.na_reference_bwd(q, k, v, dout, lse, _delta(dout, out, dlse), params)


def _with_delta(ctx, args):
    """The backward's operands with XLA's delta in place of (out, dlse), and ctx to match."""
    q, k, v, dout, lse, out, dlse = args
    avals = ctx.avals_in
    delta_aval = avals[6]  # dlse's: float32, lse's shape
    (delta,) = mlir.lower_fun(_delta, multiple_results=False)(
        ctx.replace(avals_in=[avals[3], avals[5], avals[6]], avals_out=[delta_aval]), dout, out, dlse)
    return ctx.replace(avals_in=[*avals[:5], delta_aval]), (q, k, v, dout, lse, delta)


def _lowering(direction: str, platform: str, fallback):
    def rule(ctx, *args, params: NAParams, backend: str):
        q_aval = ctx.avals_in[0]
        if backend == backends.AUTO:
            backend = backends.from_tuning(
                tuning.tuned_backend(platform, direction, q_aval, ctx.avals_in[1], params), platform)
        family = backends.family_for(platform, backend, q_aval.dtype, q_aval.shape[-1], direction)
        if family is None:
            return mlir.lower_fun(fallback, multiple_results=True)(ctx, *args, params=params, backend=backend)
        target, extra = _native.target_name(direction, family), []
        if direction == "bwd":
            if (platform == "cuda" and family == "cuda-hopper"
                    and _native.hopper_rd_pays(q_aval.shape, ctx.avals_in[1].shape[-2], params)):
                target, extra = _native.HOPPER_RD_TARGET, [ctx.avals_in[4]]  # delta: lse's aval
            else:
                ctx, args = _with_delta(ctx, args)
        lower = jax.ffi.ffi_lowering(target)
        if platform != "cuda":
            return lower(ctx, *args, **_ffi_attrs(params))
        flag = jax.core.ShapedArray((_FLAG_WORDS,), np.uint32)
        n = len(ctx.avals_out)
        return lower(ctx.replace(avals_out=[*ctx.avals_out, *extra, flag]), *args, **_ffi_attrs(params))[:n]

    return rule


for _prim, _dir, _fallback in ((na_fwd_p, "fwd", _fwd_fallback), (na_bwd_p, "bwd", _bwd_fallback)):
    mlir.register_lowering(_prim, mlir.lower_fun(_fallback, multiple_results=True))
    for _platform in ("cpu", "cuda"):
        mlir.register_lowering(_prim, _lowering(_dir, _platform, _fallback), platform=_platform)
