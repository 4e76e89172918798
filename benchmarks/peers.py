"""The implementations timed side by side, what each needs, and how much memory it takes.

Peers (all timed in one process on the same input arrays):
  cudnn-full    jax.nn.dot_product_attention(implementation="cudnn"), full (dense) attention:
                the baseline of the speedup column (GPU, bf16/fp16).
  cudnn-causal  the same with is_causal=True (1-D causal problems only).
  cudnn-window  cuDNN's causal sliding window (is_causal, local_window_size=(k-1, 0)): the same
                function as 1-D causal NA with stride 1 and dilation 1.
  xla-full      jax.nn.dot_product_attention(implementation="xla"): dense, N² scores in memory.
  reference     jax_na backend="reference": the plain JAX gather + einsum NA (f32 inside).
  jax_na:FAMILY every native family jax_na.available_families() reports for this platform.
  jax_na:auto   backend=None, when it picks something not already listed (e.g. an XLA fallback).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp

import jax_na
from jax_na import backends as na_backends

from .problems import Problem

# Rough rates (FLOP/s of the NA work) used only to skip calls predicted to exceed --max-call-s
# before anything runs; the runner lowers them to the slowest rate a peer has shown so far in
# the run, and predicts forward+backward from the measured forward.
ASSUMED_RATE = {"cuda-naive": 1e12, "cuda-gemm": 30e12, "cuda-fused": 100e12, "cuda-hopper": 150e12, "cpu": 5e9,
                "dense-gpu": 300e12, "xla-full-gpu": 100e12, "dense-cpu": 20e9,
                "reference-gpu": 0.3e12, "reference-cpu": 2e9}


def platform() -> str:
    p = jax.devices()[0].platform
    return "cuda" if p in ("gpu", "cuda") else p


@dataclasses.dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # "dense" (full attention, not the same function) or "na"
    make: Callable[[Problem], Callable]  # problem -> f(q, k, v) -> out
    why_not: Callable[[Problem], str | None]  # static reason it cannot run, or None
    memory: Callable[[Problem, str], int]  # peak bytes beyond the inputs, estimated
    rate: Callable[[Problem], float]  # assumed FLOP/s of the NA work, for prediction
    shared: bool = False  # depends only on (B, N, H, Hkv, D, dtype, causal): reuse across problems
    backend: str | None = None  # the jax_na backend argument, for NA peers
    tile_config: dict | None = None  # a kernel tile configuration (profiler), once kernels take one


def _flat(x):
    return x.reshape(x.shape[0], -1, *x.shape[-2:])


def _dense(implementation: str, causal: bool = False, window: bool = False):
    def make(p: Problem):
        kw = {"implementation": implementation}
        if causal or window:
            kw["is_causal"] = True
        if window:
            kw["local_window_size"] = (p.kernel[0] - 1, 0)

        def f(q, k, v):
            out = jax.nn.dot_product_attention(_flat(q), _flat(k), _flat(v), **kw)
            return out.reshape(q.shape)

        return f

    return make


def _na(backend: str | None):
    def make(p: Problem):
        def f(q, k, v):
            return jax_na.neighborhood_attention(q, k, v, p.kernel, stride=p.stride, dilation=p.dilation,
                                                 is_causal=p.causal, backend=backend)

        return f

    return make


def _dense_flop_ratio(p: Problem) -> float:
    """Dense attention does N / prod(kernel) times the NA work."""
    return p.tokens / math.prod(p.kernel)


def _cudnn_why_not(p: Problem) -> str | None:
    if platform() != "cuda":
        return "no GPU (cuDNN needs CUDA)"
    if p.dtype == "float32":
        return "cuDNN flash attention takes bf16/fp16 only"
    return None


def _window_why_not(p: Problem) -> str | None:
    if p.rank != 1 or not p.causal[0] or p.stride[0] != 1 or p.dilation[0] != 1:
        return "only 1-D causal, stride 1, dilation 1 is a cuDNN sliding window"
    return _cudnn_why_not(p)


def _causal_why_not(p: Problem) -> str | None:
    if p.rank != 1 or not p.causal[0]:
        return "only for 1-D causal problems"
    return _cudnn_why_not(p)


def _gather_bytes(p: Problem) -> int:
    """The gathered neighbour keys (or values) of the reference, float32."""
    return p.batch * p.tokens * math.prod(p.kernel) * p.hkv * p.head_dim * 4


def _reference_memory(p: Problem, mode: str) -> int:
    scores = p.batch * p.tokens * p.heads * math.prod(p.kernel) * 4
    g = 2 * _gather_bytes(p) + 3 * scores  # gathered k and v, scores/probs
    return int(g * (1.5 if mode == "fwd" else 3.0))


def _xla_full_memory(p: Problem, mode: str) -> int:
    scores = p.batch * p.heads * p.tokens * p.tokens  # f32 logits + f32 softmax + bf16 probs
    return int(scores * (10 if mode == "fwd" else 25))


def _linear_memory(p: Problem, mode: str) -> int:
    return (2 if mode == "fwd" else 6) * p.input_set_bytes()


def _rate(key_gpu: str, key_cpu: str):
    return lambda p: ASSUMED_RATE[key_gpu if platform() == "cuda" else key_cpu]


def _family_why_not(family: str):
    def why(p: Problem) -> str | None:
        plat = platform()
        if (family == "cpu") != (plat == "cpu"):
            return f"family {family!r} does not run on platform {plat!r}"
        return None

    return why


def auto_choice(p: Problem) -> str:
    """What backend=None runs for this problem here: a family name, 'reference', 'xla-fallback',
    or 'F (forward) + B (backward)' where the directions lower to different families."""
    if not jax_na.available_families():
        return "reference"
    try:
        fwd, bwd = (na_backends.family_for(platform(), na_backends.AUTO, jnp.dtype(p.dtype), p.head_dim, d)
                    or "xla-fallback" for d in ("fwd", "bwd"))
    except ValueError:
        return "xla-fallback"
    return fwd if fwd == bwd else f"{fwd} (forward) + {bwd} (backward)"


def _auto_why_not(p: Problem) -> str | None:
    choice = auto_choice(p)
    if choice == "reference":
        return "backend=None resolves to 'reference' here (no native family built): see that row"
    if choice != "xla-fallback" and " + " not in choice:  # a mix is no family's row: it runs
        return f"backend=None picks {choice!r} here: see the jax_na:{choice} row"
    return None


def _auto_memory(p: Problem, mode: str) -> int:
    return _reference_memory(p, mode) if auto_choice(p) in ("reference", "xla-fallback") else _linear_memory(p, mode)


def all_peers() -> list[Peer]:
    peers = [
        Peer("cudnn-full", "dense", _dense("cudnn"), _cudnn_why_not, _linear_memory,
             lambda p: ASSUMED_RATE["dense-gpu"] / _dense_flop_ratio(p), shared=True),
        Peer("cudnn-causal", "dense", _dense("cudnn", causal=True), _causal_why_not, _linear_memory,
             lambda p: 2 * ASSUMED_RATE["dense-gpu"] / _dense_flop_ratio(p), shared=True),
        Peer("cudnn-window", "na", _dense("cudnn", window=True), _window_why_not, _linear_memory,
             lambda p: ASSUMED_RATE["dense-gpu"]),
        Peer("xla-full", "dense", _dense("xla"), lambda p: None, _xla_full_memory,
             lambda p: ASSUMED_RATE["xla-full-gpu" if platform() == "cuda" else "dense-cpu"] / _dense_flop_ratio(p),
             shared=True),
        Peer("reference", "na", _na("reference"), lambda p: None, _reference_memory,
             _rate("reference-gpu", "reference-cpu"), backend="reference"),
    ]
    for fam in jax_na.available_families():
        peers.append(Peer(f"jax_na:{fam}", "na", _na(fam), _family_why_not(fam), _linear_memory,
                          lambda p, fam=fam: ASSUMED_RATE.get(fam, 1e12), backend=fam))
    peers.append(Peer("jax_na:auto", "na", _na(None), _auto_why_not, _auto_memory,
                      _rate("reference-gpu", "reference-cpu"), backend=None))
    return peers


def select(peers: list[Peer], names: str | None) -> list[Peer]:
    """Keep the peers named in a comma list; a name matches exactly or as a prefix ('jax_na')."""
    if not names:
        return peers
    want = [n.strip() for n in names.split(",") if n.strip()]
    return [p for p in peers if any(p.name == w or p.name.startswith(w) for w in want)]


def shared_key(peer: Peer, p: Problem, mode: str) -> tuple:
    """Problems with the same key give the same dense-attention timing (kernel/stride don't matter)."""
    causal = p.causal if peer.name == "cudnn-causal" else None
    return (peer.name, mode, p.batch, p.tokens, p.heads, p.hkv, p.head_dim, p.dtype, causal)
