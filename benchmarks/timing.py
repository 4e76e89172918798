"""Timing a compiled function properly.

- Compile ahead of time (jit(...).lower(...).compile()), so compilation never lands in a timing.
- Warm up: one call, then one block, before any recorded block.
- A timed block issues `calls_per_block` asynchronous calls back to back, rotating among the
  input sets (fresh random data; several sets so cache-sized problems are not timed from L2),
  then waits for the last one (`jax.block_until_ready`; a device runs one program's calls in
  order). The per-call time of a block is its wall time over the number of calls: with enough
  calls per block the host dispatch of call i+1 overlaps the device work of call i, and the
  block's fixed costs (dispatching its first call while the device idles, noticing its end) are
  shared by all its calls, so they do not inflate sub-millisecond problems the way one
  synchronised call per timing does. A block loses 0.2-0.6 ms on an H100 (the device idles
  while the first call is dispatched, and its clocks settle), so the runner's blocks last about
  100 ms: under 0.5% for fast and slow peers alike. Only the last call's outputs are kept, so a
  block's length is not bounded by holding every output (a 0.7 ms training step with 150 MB of
  gradients was held to 6 calls a block by that; its naive peer, 7 ms a call, to 1).
- Many blocks; report the median and the spread (p10, p90, min) of the per-call times.
- A budget in seconds bounds the recorded blocks: slow functions get fewer blocks (at least
  `min_blocks` unless that takes over 1.5× the budget, and always one), fast ones up to
  `max_blocks`. The first call and the warm-up block come on top.
- Device-bound timing (`chain`): where one call's host dispatch costs more than its device work
  (tens of microseconds a call on the H100 machine, so every forward under ~0.1 ms), blocks of
  calls measure the host. A forward is then also timed as `chain` of n calls in one compiled
  function, each call's output the next call's q (k and v from the input sets in turn): one
  dispatch runs n calls back to back, as they run inside a model, and per_call() divides by n.
  A forward + backward step is chained the same way (its out the next step's q, every step's
  gradients returned): also each executable's launch and the idle device between two of them
  (~16 µs on A1, a 0.3 ms step: NOTES.md, session 21) then stay out of a step's time, as they
  do out of a chained forward's, so that fwd+bwd minus fwd is the backward's time.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import numpy as np


@dataclasses.dataclass
class Timing:
    median_s: float
    p10_s: float
    p90_s: float
    min_s: float
    n_blocks: int
    calls_per_block: int
    first_call_s: float
    total_s: float
    calls_per_dispatch: int = 1  # n of a chained timing (per_call); 1: one call per dispatch

    def to_json(self) -> dict:
        ms = lambda s: round(s * 1e3, 6)  # noqa: E731
        return {"median_ms": ms(self.median_s), "p10_ms": ms(self.p10_s), "p90_ms": ms(self.p90_s),
                "min_ms": ms(self.min_s), "n_blocks": self.n_blocks,
                "calls_per_block": self.calls_per_block, "calls_per_dispatch": self.calls_per_dispatch,
                "first_call_ms": ms(self.first_call_s), "measure_s": round(self.total_s, 3)}


def compile_fn(fn, example_args):
    """jit + AOT compile; returns (compiled, seconds)."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*example_args).compile()
    return compiled, time.perf_counter() - t0


def _block(call, arg_sets, start: int, n: int) -> float:
    t0 = time.perf_counter()
    out = None
    for i in range(n):
        out = call(*arg_sets[(start + i) % len(arg_sets)])  # drops the previous call's outputs
    jax.block_until_ready(out)
    return time.perf_counter() - t0


def _nbytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def time_compiled(call, arg_sets, *, budget_s: float = 2.0, target_block_s: float = 5e-3,
                  min_blocks: int = 3, max_blocks: int = 30, max_calls_per_block: int = 256,
                  max_block_bytes: int = 1 << 33) -> Timing:
    """Time `call(*arg_sets[i])` (already compiled); see the module docstring."""
    start = time.perf_counter()
    t0 = time.perf_counter()
    first_out = call(*arg_sets[0])
    jax.block_until_ready(first_out)
    first = time.perf_counter() - t0
    out_bytes = max(1, _nbytes(first_out))
    del first_out

    cap = max(1, min(max_calls_per_block, max_block_bytes // out_bytes))
    plan = lambda per_call: int(min(cap, max(1, math.ceil(target_block_s / max(per_call, 1e-7)))))  # noqa: E731
    cpb = plan(first)
    # Warm-up block (also a better per-call estimate than the first call); a slow function's
    # first call is its only warm-up.
    if first * cpb < budget_s / 2:
        cpb = plan(_block(call, arg_sets, 1, cpb) / cpb)
    # Recorded blocks until the budget is spent: at least min_blocks unless that would take more
    # than 1.5× the budget, at most max_blocks. A block much faster than planned raises cpb.
    samples, i, t_meas = [], 1, time.perf_counter()
    while len(samples) < max_blocks:
        per_call = _block(call, arg_sets, i, cpb) / cpb
        samples.append(per_call)
        i += cpb
        spent = time.perf_counter() - t_meas
        nxt = per_call * cpb
        if spent + nxt > (budget_s if len(samples) >= min_blocks else 1.5 * budget_s):
            break
        if per_call * cpb < target_block_s / 2:
            cpb = plan(per_call)
    s = np.asarray(samples)
    return Timing(float(np.median(s)), float(np.percentile(s, 10)), float(np.percentile(s, 90)),
                  float(s.min()), len(samples), cpb, first, time.perf_counter() - start)


def chain(f, n: int, n_sets: int, arity: int = 3):
    """f n times in one function of the n_sets flattened input sets of `arity` arguments each
    (q0, k0, v0[, ct0], q1, ...): call i reads the previous call's output as q (its first output
    where f returns a tuple: a step's (out, dq, dk, dv)) and the other arguments of set
    i % n_sets. The data dependence keeps XLA from hoisting or merging calls; a tuple's other
    outputs, every call's, are returned too, so that XLA drops none of them."""
    def g(*flat):
        q, kept = flat[0], []
        for i in range(n):
            s = arity * (i % n_sets)
            y = f(q, *flat[s + 1:s + arity])
            if isinstance(y, tuple):
                q, *rest = y
                kept.append(rest)
            else:
                q = y
        return (q, kept) if kept else q

    return g


def chains(f, q, *rest) -> bool:
    """Whether f's output (its first, for a tuple) can feed its q (chain)."""
    out = jax.eval_shape(f, q, *rest)
    if isinstance(out, tuple) and out:
        out = out[0]
    return isinstance(out, jax.ShapeDtypeStruct) and out.shape == q.shape and out.dtype == q.dtype


def per_call(t: Timing, n: int) -> Timing:
    """A timing of chain(f, n, ...) as the timing of one call of f."""
    return dataclasses.replace(t, median_s=t.median_s / n, p10_s=t.p10_s / n, p90_s=t.p90_s / n,
                               min_s=t.min_s / n, first_call_s=t.first_call_s / n,
                               calls_per_dispatch=n)


def time_chained(f, arg_sets, n: int, **kw) -> tuple[Timing, float]:
    """chain(f, n) over the arg_sets ((q, k, v) or (q, k, v, ct)), compiled and timed
    (time_compiled's keywords), as the timing of one call of f; and the chain's compile time in
    seconds."""
    flat = [x for s in arg_sets for x in s]
    compiled, compile_s = compile_fn(chain(f, n, len(arg_sets), len(arg_sets[0])), flat)
    return per_call(time_compiled(compiled, [flat], **kw), n), compile_s


def dispatch_overhead_s(n_calls: int = 200) -> float:
    """Per-call time of a trivial jitted function issued back to back (host dispatch cost)."""
    import jax.numpy as jnp

    x = [jnp.ones((8,), jnp.float32) + i for i in range(2)]
    compiled, _ = compile_fn(lambda a: a + 1, (x[0],))
    t = time_compiled(compiled, [(a,) for a in x], budget_s=0.3, target_block_s=1.0,
                      max_calls_per_block=n_calls, min_blocks=3, max_blocks=5)
    return t.median_s
