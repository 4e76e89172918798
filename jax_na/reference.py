"""Pure-JAX reference: the oracle every backend is tested against.

Window math is the Python twin of cuda/common/window.h (both follow ../shared/na-semantics.md
and are tested against an independent dense-mask oracle in tests/). Each query gathers its
prod(kernel_size) candidate keys as the Cartesian product of per-dimension windows; causal
windows near the start hold fewer keys, which a mask removes. Works for any shape and dtype,
computes in float32, and JAX differentiates it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .params import NAParams

_HI = jax.lax.Precision.HIGHEST


@functools.lru_cache(maxsize=256)
def neighbor_table(extent: int, kernel: int, stride: int, dilation: int, causal: bool):
    """Per query coordinate x: the k candidate key coordinates and whether each is a neighbour.

    Returns (coords [L, k] int32, valid [L, k] bool).
    """
    x = np.arange(extent)
    g = x % dilation
    p = x // dilation
    lg = (extent - g + dilation - 1) // dilation
    offsets = np.arange(kernel)
    if causal:
        leader = np.minimum((p // stride) * stride + stride - 1, lg - 1)
        pos = (leader - kernel + 1)[:, None] + offsets
        valid = (pos >= 0) & (pos <= p[:, None])
    else:
        leader = np.minimum((p // stride) * stride + stride // 2, lg - 1)
        left = kernel // 2
        right = kernel // 2 + kernel % 2 - 1
        centre = np.maximum(left, np.minimum(leader, lg - 1 - right))
        pos = (centre - left)[:, None] + offsets
        valid = np.ones(pos.shape, bool)
    coords = np.clip(pos, 0, None) * dilation + g[:, None]
    return coords.astype(np.int32), valid


def _gather_tables(spatial: tuple[int, ...], params: NAParams):
    """Broadcastable index arrays [*spatial, *kernel] per dim, and the flattened mask [N, K]."""
    rank = params.rank
    idx, mask = [], np.ones((), bool)
    for i in range(rank):
        c, v = neighbor_table(spatial[i], params.kernel_size[i], params.stride[i], params.dilation[i], params.is_causal[i])
        shape = [1] * (2 * rank)
        shape[i], shape[rank + i] = c.shape
        idx.append(c.reshape(shape))
        mask = mask & v.reshape(shape)
    n = int(np.prod(spatial))
    kk = int(np.prod(params.kernel_size))
    mask = np.broadcast_to(mask, tuple(spatial) + tuple(params.kernel_size)).reshape(n, kk)
    return idx, mask


def gather_neighbors(x, params: NAParams):
    """[B, *spatial, Hkv, D] -> [B, N, prod(kernel), Hkv, D] candidate neighbours of each query."""
    spatial = tuple(x.shape[1:-2])
    idx, _ = _gather_tables(spatial, params)
    g = x[(slice(None), *idx)]
    n, kk = int(np.prod(spatial)), int(np.prod(params.kernel_size))
    return g.reshape(x.shape[0], n, kk, *x.shape[-2:])


def neighbor_mask(spatial: tuple[int, ...], params: NAParams) -> np.ndarray:
    """[N, prod(kernel)] True where the candidate key is a neighbour."""
    return _gather_tables(tuple(spatial), params)[1]


def _split_heads(q, heads_kv: int):
    """[B, N, H, D] -> [B, N, Hkv, G, D] so query head h reads kv head h // G."""
    b, n, h, d = q.shape
    return q.reshape(b, n, heads_kv, h // heads_kv, d)


def _scores(q, k, params: NAParams, flat_q):
    """Masked neighbourhood scores [B, N, Hkv, G, K] in float32."""
    mask = neighbor_mask(tuple(q.shape[1:-2]), params)
    kg = _masked_gather(k, params, mask)
    s = jnp.einsum("bnhgd,bnjhd->bnhgj", flat_q, kg, precision=_HI) * params.scale
    return jnp.where(mask[None, :, None, None, :], s, -jnp.inf)


def _masked_gather(x, params: NAParams, mask):
    """Candidate neighbours in float32 with non-neighbours zeroed, so a NaN/Inf in a token reaches
    only the queries that attend to it (0 * NaN would leak through the einsums otherwise)."""
    return jnp.where(mask[None, :, :, None, None], gather_neighbors(x.astype(jnp.float32), params), 0.0)


def na_reference(q, k, v, params: NAParams, additional_keys=None, additional_values=None):
    """Neighborhood attention. Returns (out [like q], lse [B, *spatial, H] float32)."""
    b, *spatial, h, d = q.shape
    hkv = k.shape[-2]
    n = int(np.prod(spatial))
    fq = _split_heads(q.astype(jnp.float32).reshape(b, n, h, d), hkv)
    s = _scores(q, k, params, fq)
    vals = _masked_gather(v, params, neighbor_mask(tuple(spatial), params))  # [B, N, K, Hkv, D]
    if additional_keys is not None:
        ak = additional_keys.astype(jnp.float32)
        av = additional_values.astype(jnp.float32)
        sa = jnp.einsum("bnhgd,behd->bnhge", fq, ak, precision=_HI) * params.scale
        s = jnp.concatenate([s, sa], axis=-1)
        vals = jnp.concatenate([vals, jnp.broadcast_to(av[:, None], (b, n) + av.shape[1:])], axis=2)
    lse = jax.nn.logsumexp(s, axis=-1)
    p = jnp.exp(s - lse[..., None])
    out = jnp.einsum("bnhgj,bnjhd->bnhgd", p, vals, precision=_HI)
    return out.reshape(q.shape).astype(q.dtype), lse.reshape(b, *spatial, h)


def na_reference_bwd(q, k, v, dout, lse, delta, params: NAParams):
    """Gradients of neighborhood attention given lse and delta = rowsum(dout*out) - dlse.

    The same contract as the backward kernels; used by the fallback lowering of na_bwd_p.
    """
    b, *spatial, h, d = q.shape
    hkv = k.shape[-2]
    n = int(np.prod(spatial))
    f32 = jnp.float32

    def scores_of(qf, kf):
        return _scores(q, kf, params, _split_heads(qf.reshape(b, n, h, d), hkv))

    mask = neighbor_mask(tuple(spatial), params)

    def values_of(vf):
        return _masked_gather(vf, params, mask)

    s, scores_vjp = jax.vjp(scores_of, q.astype(f32), k.astype(f32))
    vals, values_vjp = jax.vjp(values_of, v.astype(f32))
    lse_ = lse.reshape(b, n, hkv, h // hkv)[..., None]
    p = jnp.exp(s - lse_)
    do = _split_heads(dout.astype(f32).reshape(b, n, h, d), hkv)
    dp = jnp.einsum("bnhgd,bnjhd->bnhgj", do, vals, precision=_HI)
    ds = p * (dp - delta.reshape(b, n, hkv, h // hkv)[..., None])
    ds = jnp.where(mask[None, :, None, None, :], ds, 0.0)  # non-neighbours only: NaN stays NaN
    dq, dk = scores_vjp(ds)
    (dv,) = values_vjp(jnp.einsum("bnhgj,bnhgd->bnjhd", p, do, precision=_HI))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


def dense_attention(q, k, v, scale: float):
    """Unmasked attention of [B, *spatial, H, D] queries to [B, E, Hkv, D] tokens -> (out, lse)."""
    b, *spatial, h, d = q.shape
    hkv = k.shape[-2]
    n = int(np.prod(spatial))
    fq = _split_heads(q.astype(jnp.float32).reshape(b, n, h, d), hkv)
    s = jnp.einsum("bnhgd,behd->bnhge", fq, k.astype(jnp.float32), precision=_HI) * scale
    lse = jax.nn.logsumexp(s, axis=-1)
    out = jnp.einsum("bnhge,behd->bnhgd", jnp.exp(s - lse[..., None]), v.astype(jnp.float32), precision=_HI)
    return out.reshape(q.shape).astype(q.dtype), lse.reshape(b, *spatial, h)
