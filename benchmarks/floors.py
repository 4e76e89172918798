"""The two ceilings, measured once per run on the card at hand.

- Matrix-unit rate: a large matmul in the problem dtype (8192³ bf16 on GPU; smaller on CPU),
  2·n³ FLOPs over its median time.
- Memory bandwidth: a large elementwise pass (y = 2·x, float32), bytes read + written over time.

A problem's floor is max(FLOPs / rate, minimum bytes / bandwidth); "% of floor" = floor / time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import timing

_JNP = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _is_gpu() -> bool:
    return jax.devices()[0].platform != "cpu"


def matmul_rate(dtype: str, n: int | None = None, budget_s: float = 1.0) -> dict:
    """FLOP/s of an n×n×n matmul in `dtype` (default precision), rotating two input sets."""
    if n is None:
        n = 8192 if _is_gpu() else (1024 if dtype == "float32" else 512)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    mats = [jax.random.normal(k, (n, n), _JNP[dtype]) for k in keys]
    sets = [(mats[0], mats[1]), (mats[2], mats[3])]
    compiled, _ = timing.compile_fn(lambda a, b: a @ b, sets[0])
    t = timing.time_compiled(compiled, sets, budget_s=budget_s, target_block_s=0.02, max_blocks=20)
    return {"dtype": dtype, "n": n, "median_ms": t.median_s * 1e3,
            "flops_per_s": 2.0 * n**3 / t.median_s}


def copy_bandwidth(n_bytes: int | None = None, budget_s: float = 1.0) -> dict:
    """Bytes/s (read + written) of y = 2·x over a large float32 array, two input sets."""
    if n_bytes is None:
        n_bytes = (1 << 30) if _is_gpu() else (64 << 20)
    n = n_bytes // 4
    xs = [jnp.arange(n, dtype=jnp.float32) * 1e-3 + i for i in range(2)]  # non-zero, cheap to make
    compiled, _ = timing.compile_fn(lambda x: x * 2.0, (xs[0],))
    t = timing.time_compiled(compiled, [(x,) for x in xs], budget_s=budget_s, target_block_s=0.02,
                             max_blocks=20)
    return {"n_bytes": n_bytes, "median_ms": t.median_s * 1e3, "bytes_per_s": 2.0 * n_bytes / t.median_s}


def measure(dtypes, budget_s: float = 1.0) -> dict:
    """{'matmul': {dtype: {...}}, 'copy': {...}, 'dispatch_us': float}."""
    out = {"matmul": {}, "copy": copy_bandwidth(budget_s=budget_s),
           "dispatch_us": timing.dispatch_overhead_s() * 1e6}
    for dt in sorted(set(dtypes)):
        out["matmul"][dt] = matmul_rate(dt, budget_s=budget_s)
    return out


def floor_s(problem, mode: str, floors: dict | None) -> tuple[float | None, str | None]:
    """(floor seconds, 'compute' or 'memory') for one problem and mode, or (None, None)."""
    if not floors:
        return None, None
    rate = floors["matmul"].get(problem.dtype, {}).get("flops_per_s")
    bw = floors["copy"].get("bytes_per_s")
    if not rate or not bw:
        return None, None
    tc = problem.flops(mode) / rate
    tm = problem.min_bytes(mode) / bw
    return (tc, "compute") if tc >= tm else (tm, "memory")
