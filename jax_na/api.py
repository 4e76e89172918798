"""Public API: na1d / na2d / na3d / neighborhood_attention (NATTEN's argument names).

Layout is [batch, *spatial, heads, head_dim] like jax.nn.dot_product_attention.
"""

from __future__ import annotations

from . import backends, reference
from .autodiff import na_with_lse
from .merge import merge_attentions
from .params import BoolOrTuple, IntOrTuple, make_params


def _attention(query, key, value, kernel_size, stride, dilation, is_causal, scale,
               additional_keys, additional_values, return_lse, backend, expected_rank):
    params = make_params(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                         additional_keys, additional_values, expected_rank)
    chosen = backends.resolve(backend)
    if chosen == backends.REFERENCE:
        out, lse = reference.na_reference(query, key, value, params, additional_keys, additional_values)
    else:
        out, lse = na_with_lse(query, key, value, params, chosen)
        if additional_keys is not None:
            # Extra tokens are seen by every query, unmasked (also when causal): merge by lse.
            extra = reference.dense_attention(query, additional_keys, additional_values, params.scale)
            out, lse = merge_attentions([out, extra[0]], [lse, extra[1]])
    return (out, lse) if return_lse else out


def neighborhood_attention(
    query,
    key,
    value,
    kernel_size: IntOrTuple,
    *,
    stride: IntOrTuple = 1,
    dilation: IntOrTuple = 1,
    is_causal: BoolOrTuple = False,
    scale: float | None = None,
    additional_keys=None,
    additional_values=None,
    return_lse: bool = False,
    backend: str | None = None,
):
    """Neighborhood attention over 1, 2 or 3 spatial dimensions.

    Args:
      query: [batch, *spatial, heads, head_dim]; key, value: [batch, *spatial, heads_kv, head_dim]
        with heads % heads_kv == 0 (GQA/MQA). float32, float16 or bfloat16, one dtype for all.
      kernel_size, stride, dilation, is_causal: an int/bool for every spatial dimension, or one
        per dimension. Semantics are NATTEN 0.21's (see the README).
      scale: score scale, default head_dim ** -0.5.
      additional_keys, additional_values: optional [batch, n_extra, heads_kv, head_dim] tokens
        attended by every query without any mask (causal or not).
      return_lse: also return the float32 logsumexp [batch, *spatial, heads].
      backend: None (fastest available for the platform), "reference", "cpu", "cuda-naive",
        "cuda-gemm", "cuda-fused" or "cuda-hopper" (sm_90a wgmma forward and backward for
        f16/bf16 at head_dim 32/64/128/256; float32 runs on cuda-fused, other head dims on
        cuda-naive).
    """
    return _attention(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                      additional_keys, additional_values, return_lse, backend, None)


def _fixed_rank(rank: int):
    def na(query, key, value, kernel_size, *, stride=1, dilation=1, is_causal=False, scale=None,
           additional_keys=None, additional_values=None, return_lse=False, backend=None):
        return _attention(query, key, value, kernel_size, stride, dilation, is_causal, scale,
                          additional_keys, additional_values, return_lse, backend, rank)

    na.__name__ = na.__qualname__ = f"na{rank}d"
    na.__doc__ = f"{rank}-D neighborhood attention; see neighborhood_attention. query is [batch, {rank} spatial, heads, head_dim]."
    return na


na1d = _fixed_rank(1)
na2d = _fixed_rank(2)
na3d = _fixed_rank(3)
