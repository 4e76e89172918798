"""Combining partial attentions over disjoint key sets by their logsumexp."""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def merge_attentions(outputs: Sequence, lses: Sequence):
    """Merge attention outputs computed over disjoint key sets into the attention over their union.

    outputs: arrays [batch, *spatial, heads, head_dim]; lses: matching [batch, *spatial, heads]
    float32 natural-log logsumexps. Returns (out, lse) with out in outputs[0].dtype. Differentiable
    with respect to every output and lse.
    """
    if len(outputs) != len(lses) or len(outputs) < 1:
        raise ValueError(f"outputs and lses must be non-empty and of equal length, got {len(outputs)} and {len(lses)}")
    for i, (o, l) in enumerate(zip(outputs, lses)):
        if tuple(o.shape[:-1]) != tuple(lses[0].shape) or tuple(l.shape) != tuple(lses[0].shape):
            raise ValueError(
                f"outputs[{i}] {tuple(o.shape)} and lses[{i}] {tuple(l.shape)} must be [..., heads, head_dim] "
                f"and [..., heads] with the shape of lses[0] {tuple(lses[0].shape)}"
            )
    stacked = jnp.stack([l.astype(jnp.float32) for l in lses])
    lse = jax.nn.logsumexp(stacked, axis=0)
    weights = jnp.exp(stacked - lse)
    out = sum(w[..., None] * o.astype(jnp.float32) for w, o in zip(weights, outputs))
    return out.astype(outputs[0].dtype), lse
