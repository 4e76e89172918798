"""Gradients: custom_vjp around the forward primitive, backward through the backward primitive.

The forward saves (q, k, v, out, lse). The backward primitive takes both cotangents with out;
its lowering folds them into delta = rowsum(dout * out) - dlse (an XLA reduction, or the Hopper
dQ kernel where that pays: primitives.py), so kernels need no lse cotangent: dS = P * (dP - delta)
covers both. Both primitives are bound through sharding.py (custom_partitioning: batch/head
sharding under jit without collectives).
"""

from __future__ import annotations

import functools

import jax

from .params import NAParams
from .sharding import na_bwd, na_fwd


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def na_with_lse(q, k, v, params: NAParams, backend: str):
    """(out, lse) of neighborhood attention through the primitives."""
    return tuple(na_fwd(q, k, v, params, backend))


def _fwd(q, k, v, params, backend):
    out, lse = na_fwd(q, k, v, params, backend)
    return (out, lse), (q, k, v, out, lse)


def _bwd(params, backend, res, cts):
    q, k, v, out, lse = res
    dout, dlse = cts
    dq, dk, dv = na_bwd(q, k, v, dout.astype(q.dtype), lse, out, dlse, params, backend)
    return dq, dk, dv


na_with_lse.defvjp(_fwd, _bwd)
