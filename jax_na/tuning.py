"""The tuning cache that `python benchmarks/run.py --optimize` writes and backend=None reads.

File: $JAX_NA_TUNING_CACHE or ~/.cache/jax_na/tuning.json, {"version": 1, "entries": {key: entry}}
with key = tuning_key(...) (card, direction, problem signature) and entry["backend"] the fastest
backend measured there. JAX_NA_TUNING=0 turns the lookup off. The file is read once per process.
"""

from __future__ import annotations

import functools
import json
import os

CACHE_VERSION = 1


def cache_path(path: str | None = None) -> str:
    return path or os.environ.get("JAX_NA_TUNING_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "jax_na", "tuning.json")


def tuning_key(device_kind: str, direction: str, q_shape, kv_heads: int, dtype: str, kernel_size,
               stride, dilation, is_causal) -> str:
    """Problem signature, from values a primitive's lowering has (q aval, k aval, NAParams).

    e.g. 'NVIDIA H100 80GB HBM3|fwd|bfloat16|q=128x56x56x2x32|hkv=2|k=7x7|s=1x1|d=1x1|c=00'
    """
    j = lambda t: "x".join(str(int(v)) for v in t)  # noqa: E731
    return (f"{device_kind}|{direction}|{dtype}|q={j(q_shape)}|hkv={int(kv_heads)}|k={j(kernel_size)}"
            f"|s={j(stride)}|d={j(dilation)}|c={''.join('1' if c else '0' for c in is_causal)}")


def load_cache(path: str | None = None) -> dict:
    try:
        with open(cache_path(path)) as f:
            doc = json.load(f)
        if doc.get("version") == CACHE_VERSION:
            return doc
    except (OSError, ValueError):
        pass
    return {"version": CACHE_VERSION, "entries": {}}


@functools.lru_cache(maxsize=1)
def _entries() -> dict:
    if os.environ.get("JAX_NA_TUNING", "1") == "0":
        return {}
    return load_cache()["entries"]


def tuned_backend(platform: str, direction: str, q_aval, k_aval, params) -> str | None:
    """The cached fastest backend for this problem on this platform's card, or None."""
    entries = _entries()
    if not entries:
        return None
    import jax

    kind = jax.devices(platform)[0].device_kind
    key = tuning_key(kind, direction, q_aval.shape, k_aval.shape[-2], q_aval.dtype.name,
                     params.kernel_size, params.stride, params.dilation, params.is_causal)
    entry = entries.get(key)
    return entry.get("backend") if entry else None
