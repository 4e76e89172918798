"""Runs peers × problems × modes within a time limit and a memory limit; returns result rows.

Every row ends as "ok" (timed), "skipped" (with the reason: no GPU, estimated memory over the
limit, predicted call time over --max-call-s, time limit reached, ...) or "error" (compile or
run raised; the message is kept). Nothing here raises for one bad peer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np

from . import meta, timing
from .peers import Peer, shared_key
from .problems import Problem

L2_BYTES = 50 << 20  # H100 L2; input sets are rotated so the working set exceeds it
_JNP = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass
class Row:
    problem: Problem
    peer: str
    mode: str
    status: str = "pending"
    reason: str = ""
    timing: timing.Timing | None = None
    compile_s: float | None = None
    rel_err: float | None = None  # ‖out − ref‖ / ‖ref‖ of the forward on input set 0
    rel_err_vs: str | None = None
    kind: str = "na"
    backend: str | None = None
    tile_config: dict | None = None
    n_input_sets: int = 0
    applicable: bool = True  # False: the peer cannot run this problem here at all (static reason)
    host_median_s: float | None = None  # a chained row's time from blocks of calls (timing.chain)
    t_start: float | None = None  # perf_counter span of its compile and timing (gpu_monitor windows)
    t_end: float | None = None


@dataclasses.dataclass
class Limits:
    time_limit_s: float = 50.0  # whole run (rows after it are skipped)
    max_row_s: float = 1.0  # measuring budget of one row (compile excluded)
    min_row_s: float = 0.2
    max_call_s: float = 3.0  # skip calls predicted slower than this
    mem_frac: float = 0.8  # of the device allocator limit (GPU) or MemAvailable (CPU)
    target_block_s: float | None = None  # default 100 ms (timing.py: blocks share fixed costs)
    deadline: float | None = None  # absolute time.perf_counter() end; overrides time_limit_s
    seed: int = 0
    # Forwards and forward + backward steps faster than this per call are timed chained as well
    # (timing.chain), and that time is the row's; default 1 ms on GPU (host dispatch there is
    # ~40 us a call), off (0) on CPU.
    chain_below_s: float | None = None
    max_chain: int = 32


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    first = next((m for m in msg if m.strip()), "")
    return f"{type(e).__name__}: {first}"[:300]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def with_grad(f):
    """(q, k, v, ct) -> (out, dq, dk, dv): forward + backward of sum(out * ct)."""
    def g(q, k, v, ct):
        out, vjp = jax.vjp(f, q, k, v)
        return (out, *vjp(ct))

    return g


@functools.partial(jax.jit, static_argnames=("shapes", "dtype"))
def _normal(key, shapes, dtype):
    return tuple(jax.random.normal(k, sh, dtype) for k, sh in zip(jax.random.split(key, len(shapes)), shapes))


def make_inputs(p: Problem, n_sets: int, seed: int):
    """n_sets tuples (q, k, v, ct) of fresh standard-normal data (the same for the same seed).

    On GPU drawn on the device; on CPU drawn by NumPy, which is quicker there than compiling
    JAX's generator for every shape.
    """
    shapes = (p.q_shape(), p.kv_shape(), p.kv_shape(), p.q_shape())
    if jax.devices()[0].platform == "cpu":
        rng = np.random.default_rng(seed)
        dt = np.dtype(_JNP[p.dtype])
        sets = [tuple(jax.device_put(rng.standard_normal(sh, dtype=np.float32).astype(dt)) for sh in shapes)
                for _ in range(n_sets)]
    else:
        base = jax.random.PRNGKey(seed)
        sets = [_normal(jax.random.fold_in(base, i), shapes, _JNP[p.dtype]) for i in range(n_sets)]
    jax.block_until_ready(sets)
    return sets


def n_input_sets(p: Problem, mem_limit: float) -> int:
    b = p.input_set_bytes()
    if b < L2_BYTES:
        return int(min(8, max(2, math.ceil(2 * L2_BYTES / b))))
    return 2 if 2 * b <= mem_limit / 4 else 1


_rel_err = jax.jit(lambda a, b: jnp.sqrt(jnp.sum(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)))
                                         / jnp.sum(jnp.square(b.astype(jnp.float32)))))


def args_for(mode: str, f, sets):
    """(function to compile, its argument sets) for one mode."""
    if mode == "fwd":
        return f, [s[:3] for s in sets]
    if mode == "fwd+bwd":
        return with_grad(f), list(sets)
    if mode == "bwd":  # the backward alone: residuals computed outside the timing
        res, treedef = [], None
        for q, k, v, ct in sets:
            _, vjp = jax.vjp(f, q, k, v)
            leaves, td = jax.tree_util.tree_flatten(vjp)
            treedef = treedef or td  # one pullback; each set brings its residuals
            res.append((leaves, ct))
        return (lambda leaves, ct: jax.tree_util.tree_unflatten(treedef, leaves)(ct)), res
    raise ValueError(mode)


def run(problems, peers: list[Peer], modes, limits: Limits, on_row=None) -> list[Row]:
    start = time.perf_counter()
    deadline = limits.deadline or start + limits.time_limit_s
    on_gpu = jax.devices()[0].platform != "cpu"
    target_block = limits.target_block_s or 0.1
    chain_below = limits.chain_below_s if limits.chain_below_s is not None else (1e-3 if on_gpu else 0.0)
    mem_limit = limits.mem_frac * meta.available_memory_bytes()

    rows: list[Row] = []
    plan: list[tuple[Problem, Peer, list[Row]]] = []
    for p in problems:
        for peer in peers:
            why = peer.why_not(p)
            prow = []
            for mode in modes:
                r = Row(p, peer.name, mode, kind=peer.kind, backend=peer.backend,
                        tile_config=peer.tile_config)
                if why:
                    r.status, r.reason, r.applicable = "skipped", why, False
                prow.append(r)
                rows.append(r)
            plan.append((p, peer, prow))

    # Peers first, jax_na's native families last (problem order kept within each phase): a kernel
    # that corrupts the device context can then only spoil its own rows, not the peers'.
    plan.sort(key=lambda item: item[1].name.startswith("jax_na"))
    ref_outs: dict[str, tuple[str, object]] = {}  # problem -> (peer, forward output on set 0)
    shared: dict[tuple, Row] = {}
    learned: dict[tuple[str, str], float] = {}  # (peer, mode) -> slowest measured FLOP/s so far
    overheads: list[float] = []  # per timed row: compile + first call + warm-up, seconds
    done = 0
    total = sum(r.status == "pending" for r in rows)
    current_problem, sets = None, None
    for p, peer, prow in plan:
        if all(r.status != "pending" for r in prow):
            continue
        if current_problem is not p:
            sets = None  # free the previous problem's inputs first
            current_problem = p
            n = n_input_sets(p, mem_limit)
            inputs_bytes = n * p.input_set_bytes()
            if inputs_bytes > mem_limit:
                n, inputs_bytes = 1, p.input_set_bytes()
            no_inputs = f"inputs ({inputs_bytes / 2**30:.1f} GiB) do not fit the memory limit"
            if time.perf_counter() > deadline:
                no_inputs = f"run time limit ({limits.time_limit_s:.0f} s) reached"
            elif inputs_bytes <= mem_limit:
                try:
                    sets = make_inputs(p, n, limits.seed + zlib.crc32(p.name.encode()) % 1000)
                except Exception as e:  # noqa: BLE001
                    no_inputs = f"could not create inputs: {_short(e)}"
                    _log(f"{p.name}: {no_inputs}")
        fwd_time = None
        for r in prow:
            if r.status != "pending":
                continue
            done += 1
            now = time.perf_counter()
            tag = f"[{done:3d}/{total} {now - start:5.0f}s] {p.name:5s} {r.mode:7s} {peer.name:16s}"
            pending_left = total - done + 1
            overhead = sum(overheads) / len(overheads) if overheads else (3.0 if on_gpu else 1.0)
            # Peers run first but leave time for the jax_na rows still to come.
            family_left = sum(x.status == "pending" for _, pr, rs in plan if pr.name.startswith("jax_na")
                              for x in rs)
            family_overhead = min(overhead, 1.0 if on_gpu else 0.5)  # custom calls compile quickly
            reserve = 0.0 if peer.name.startswith("jax_na") else family_left * (family_overhead + limits.min_row_s)
            key = shared_key(peer, p, r.mode)
            if peer.shared and key in shared:  # the same dense problem was timed already
                src = shared[key]
                r.status, r.timing, r.compile_s = src.status, src.timing, src.compile_s
                r.host_median_s = src.host_median_s
                r.n_input_sets, r.reason = src.n_input_sets, f"same dense problem as {src.problem.name} (timed once)"
            elif sets is None:
                r.status, r.reason = "skipped", no_inputs
            elif now > deadline - reserve:
                r.status, r.reason = "skipped", f"run time limit ({limits.time_limit_s:.0f} s) reached" + (
                    " (time left is kept for the jax_na rows)" if now <= deadline else "")
            elif peer.memory(p, r.mode) + inputs_bytes > mem_limit:
                r.status = "skipped"
                r.reason = (f"estimated memory {peer.memory(p, r.mode) / 2**30:.1f} GiB + inputs "
                            f"{inputs_bytes / 2**30:.1f} GiB > limit {mem_limit / 2**30:.1f} GiB")
            else:
                rate = peer.rate(p)
                if peer.kind == "na":  # an NA peer's rate carries over between problems; a dense one's doesn't
                    rate = min(rate, learned.get((peer.name, r.mode), math.inf))
                pred = p.flops(r.mode) / rate
                if fwd_time is not None and r.mode != "fwd":
                    pred = fwd_time * (3.5 if r.mode == "fwd+bwd" else 2.5)
                if pred > limits.max_call_s:
                    r.status = "skipped"
                    r.reason = f"predicted {pred:.1f} s per call > --max-call-s {limits.max_call_s:g}"
            if r.status != "pending":
                _log(f"{tag} {r.status}: {r.reason}")
                if on_row:
                    on_row(r)
                continue
            fair = (deadline - now - overhead * pending_left) / pending_left
            budget = min(limits.max_row_s, max(limits.min_row_s, fair))
            fn, arg_sets = None, None
            r.t_start = time.perf_counter()
            try:
                f = peer.make(p)
                fn, arg_sets = args_for(r.mode, f, sets)
                compiled, r.compile_s = timing.compile_fn(fn, arg_sets[0])
                r.timing = timing.time_compiled(compiled, arg_sets, budget_s=budget,
                                                target_block_s=target_block)
                r.status, r.n_input_sets = "ok", len(arg_sets)
                if (r.mode in ("fwd", "fwd+bwd") and r.timing.median_s < chain_below
                        and timing.chains(fn, *arg_sets[0])):
                    r.host_median_s = r.timing.median_s
                    n = int(min(limits.max_chain, max(2, math.ceil(chain_below / r.timing.median_s))))
                    r.timing, chain_compile_s = timing.time_chained(fn, arg_sets, n, budget_s=budget,
                                                                    target_block_s=target_block)
                    r.compile_s += chain_compile_s
                overheads.append(r.compile_s + r.timing.total_s - r.timing.median_s * r.timing.n_blocks
                                 * r.timing.calls_per_block)
                rate_now = p.flops(r.mode) / r.timing.median_s
                learned[(peer.name, r.mode)] = min(rate_now, learned.get((peer.name, r.mode), math.inf))
                if r.mode == "fwd":
                    fwd_time = r.timing.median_s
                    if peer.kind == "na":  # check against the reference (or cuDNN's window)
                        out = compiled(*arg_sets[0])
                        ref = ref_outs.get(p.name)
                        if ref is not None and peer.name != "reference":
                            r.rel_err, r.rel_err_vs = float(_rel_err(out, ref[1])), ref[0]
                        if peer.name == "reference" or (peer.name == "cudnn-window" and ref is None):
                            ref_outs[p.name] = (peer.name, out)
                        del out
                del compiled
            except Exception as e:  # noqa: BLE001 - one failing peer must not stop the run
                r.status, r.reason = "error", _short(e)
            finally:
                del fn, arg_sets
                r.t_end = time.perf_counter()
            if peer.shared and r.status == "ok" and key not in shared:
                shared[key] = r
            if r.status == "ok":
                t = r.timing
                chained = (f", chained ×{t.calls_per_dispatch}: host-timed {r.host_median_s * 1e3:.3f} ms"
                           if r.host_median_s is not None else "")
                _log(f"{tag} {t.median_s * 1e3:10.3f} ms  (p10 {t.p10_s * 1e3:.3f}, p90 {t.p90_s * 1e3:.3f}; "
                     f"{t.n_blocks}×{t.calls_per_block} calls{chained}, compile {r.compile_s:.1f} s)"
                     + (f" rel_err {r.rel_err:.1e}" if r.rel_err is not None else ""))
            else:
                _log(f"{tag} {r.status}: {r.reason}")
            if r.status == "error" and r.mode == "fwd":
                for later in prow:
                    if later.status == "pending":
                        later.status, later.reason = "skipped", "forward failed"
            if on_row:
                on_row(r)
    sets = None
    ref_outs.clear()
    return rows
