"""An independent float64 dense-mask oracle for neighborhood attention, in numpy.

Written from ../shared/na-semantics.md alone: it does not import jax_na. For every (query
coordinate, key coordinate) pair it decides neighbourhood directly from the text, builds the
full [N, N] mask, and computes softmax attention over the masked full score matrix plus the
unmasked additional tokens, in float64. Gradients are the closed form of that function:

    P = softmax(S),  dP = dO V^T,  dS = P * (dP - rowsum(dO * O) + dlse),
    dQ = scale dS K,  dK = scale dS^T Q,  dV = P^T dO   (summed over the query heads of a kv head).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


# --- who attends to whom ---------------------------------------------------------------------

def is_neighbour_1d(x: int, y: int, extent: int, kernel: int, stride: int, dilation: int, causal: bool) -> bool:
    """Is key coordinate y a neighbour of query coordinate x in one dimension (the semantics text)."""
    if x % dilation != y % dilation:  # same dilation group or nothing
        return False
    g = x % dilation
    p, pk = x // dilation, y // dilation
    lg = math.ceil((extent - g) / dilation)
    if causal:
        leader = min((p // stride) * stride + stride - 1, lg - 1)
        return pk <= p and leader - pk < kernel
    leader = min((p // stride) * stride + stride // 2, lg - 1)
    left = kernel // 2
    right = kernel // 2 + (kernel % 2) - 1
    lo, hi = left, lg - 1 - right
    centre = min(max(leader, lo), hi)
    return centre - left <= pk <= centre + right


def mask_1d(extent: int, kernel: int, stride: int, dilation: int, causal: bool) -> np.ndarray:
    """[L, L] bool: mask[x, y] = key y is a neighbour of query x in this dimension."""
    return np.array(
        [[is_neighbour_1d(x, y, extent, kernel, stride, dilation, causal) for y in range(extent)] for x in range(extent)],
        dtype=bool,
    )


def dense_mask(spatial, kernel, stride, dilation, causal) -> np.ndarray:
    """[N, N] bool over row-major flattened coordinates: a neighbour in every dimension."""
    rank = len(spatial)
    per_dim = [mask_1d(spatial[i], kernel[i], stride[i], dilation[i], causal[i]) for i in range(rank)]
    coords = list(itertools.product(*[range(e) for e in spatial]))
    n = len(coords)
    c = np.array(coords).reshape(n, rank)
    m = np.ones((n, n), bool)
    for i in range(rank):
        m &= per_dim[i][c[:, i][:, None], c[:, i][None, :]]
    return m


def simple_mask_1d(extent: int, kernel: int, causal: bool) -> np.ndarray:
    """The plain-words special case s = d = 1: k keys centred on the query, shifted inward at
    the borders (non-causal), or itself and the k - 1 keys before it (causal)."""
    m = np.zeros((extent, extent), bool)
    for x in range(extent):
        if causal:
            m[x, max(0, x - kernel + 1): x + 1] = True
        else:
            start = x - kernel // 2
            start = min(max(start, 0), extent - kernel)
            m[x, start: start + kernel] = True
    return m


# --- what is computed ------------------------------------------------------------------------

def _expand_kv(x, heads):
    """[B, M, Hkv, D] -> [B, M, H, D]: query head h reads kv head h // (H // Hkv)."""
    return np.repeat(x, heads // x.shape[2], axis=2)


def _full_inputs(q, k, v, ak, av):
    b, *spatial, h, d = q.shape
    n = int(np.prod(spatial))
    q2 = np.asarray(q, np.float64).reshape(b, n, h, d)
    k2 = np.asarray(k, np.float64).reshape(b, n, -1, d)
    v2 = np.asarray(v, np.float64).reshape(b, n, -1, d)
    if ak is not None:
        k2 = np.concatenate([k2, np.asarray(ak, np.float64)], axis=1)
        v2 = np.concatenate([v2, np.asarray(av, np.float64)], axis=1)
    return q2, k2, v2, n


def _full_mask(spatial, cfg, n_extra):
    m = dense_mask(spatial, cfg["kernel_size"], cfg["stride"], cfg["dilation"], cfg["is_causal"])
    return np.concatenate([m, np.ones((m.shape[0], n_extra), bool)], axis=1)


def _forward(q2, kf, vf, mask, scale):
    s = np.einsum("bnhd,bmhd->bhnm", q2, kf) * scale
    s = np.where(mask[None, None], s, -np.inf)
    smax = s.max(axis=-1, keepdims=True)
    e = np.exp(s - smax)
    z = e.sum(axis=-1, keepdims=True)
    p = e / z
    lse = (np.log(z) + smax)[..., 0]  # [B, H, N]
    out = np.einsum("bhnm,bmhd->bnhd", p, vf)
    return p, out, lse


def attention(q, k, v, cfg, additional_keys=None, additional_values=None):
    """float64 (out [B, *spatial, H, D], lse [B, *spatial, H]).

    cfg: dict with per-dim tuples kernel_size, stride, dilation, is_causal and a float scale.
    """
    b, *spatial, h, d = q.shape
    q2, k2, v2, n = _full_inputs(q, k, v, additional_keys, additional_values)
    mask = _full_mask(spatial, cfg, k2.shape[1] - n)
    _, out, lse = _forward(q2, _expand_kv(k2, h), _expand_kv(v2, h), mask, cfg["scale"])
    return out.reshape(q.shape), np.moveaxis(lse, 1, -1).reshape(b, *spatial, h)


def attention_vjp(q, k, v, cfg, dout, dlse, additional_keys=None, additional_values=None):
    """float64 cotangents of (q, k, v, additional_keys, additional_values) for output
    cotangents (dout, dlse); the additional ones are None when there are no extra tokens."""
    b, *spatial, h, d = q.shape
    q2, k2, v2, n = _full_inputs(q, k, v, additional_keys, additional_values)
    hkv = k2.shape[2]
    mask = _full_mask(spatial, cfg, k2.shape[1] - n)
    kf, vf = _expand_kv(k2, h), _expand_kv(v2, h)
    scale = cfg["scale"]
    p, out, _ = _forward(q2, kf, vf, mask, scale)
    do = np.asarray(dout, np.float64).reshape(b, n, h, d)
    dl = np.moveaxis(np.asarray(dlse, np.float64).reshape(b, n, h), -1, 1)  # [B, H, N]
    dp = np.einsum("bnhd,bmhd->bhnm", do, vf)
    rowsum = np.moveaxis(np.sum(do * out, axis=-1), -1, 1)  # [B, H, N]
    ds = p * (dp - rowsum[..., None] + dl[..., None])
    dq = scale * np.einsum("bhnm,bmhd->bnhd", ds, kf)
    dkf = scale * np.einsum("bhnm,bnhd->bmhd", ds, q2)
    dvf = np.einsum("bhnm,bnhd->bmhd", p, do)
    # fold query heads back onto their kv head
    dk2 = dkf.reshape(b, -1, hkv, h // hkv, d).sum(axis=3)
    dv2 = dvf.reshape(b, -1, hkv, h // hkv, d).sum(axis=3)
    dk = dk2[:, :n].reshape(k.shape)
    dv = dv2[:, :n].reshape(v.shape)
    if additional_keys is None:
        return dq.reshape(q.shape), dk, dv, None, None
    return dq.reshape(q.shape), dk, dv, dk2[:, n:], dv2[:, n:]


def dense_attention(q, k, v, scale):
    """float64 unmasked attention of [B, *spatial, H, D] queries to [B, E, Hkv, D] tokens:
    (out [B, *spatial, H, D], lse [B, *spatial, H])."""
    b, *spatial, h, d = q.shape
    n = int(np.prod(spatial))
    q2 = np.asarray(q, np.float64).reshape(b, n, h, d)
    kf, vf = _expand_kv(np.asarray(k, np.float64), h), _expand_kv(np.asarray(v, np.float64), h)
    _, out, lse = _forward(q2, kf, vf, np.ones((n, kf.shape[1]), bool), scale)
    return out.reshape(q.shape), np.moveaxis(lse, 1, -1).reshape(b, *spatial, h)
