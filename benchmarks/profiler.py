"""Profiler: which jax_na backends (and, once kernels expose them, tile configurations) can run a
problem (--dry-run), which is fastest (--optimize), and a JSON cache of the winners that
backend=None can read.

Cache: $JAX_NA_TUNING_CACHE or ~/.cache/jax_na/tuning.json, {"version": 1, "entries": {key: entry}}
with key = tuning_key(...) (one per card, direction and problem signature) and entry =
{"backend": name, "tile_config": dict or null, "time_ms": float, "candidates": {label: ms},
 "date", "jax_version", "git_commit"}.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os

import jax_na
from jax_na.tuning import CACHE_VERSION, cache_path, load_cache, tuning_key

from . import meta, peers as peers_mod
from .peers import Peer
from .problems import Problem

DIRECTIONS = ("fwd", "bwd")


def problem_key(p: Problem, direction: str, device_kind: str | None = None) -> str:
    kind = device_kind or meta.device_info()["device_kind"]
    return tuning_key(kind, direction, p.q_shape(), p.hkv, p.dtype, p.kernel, p.stride, p.dilation, p.causal)


def tile_configs(backend: str, p: Problem) -> list[dict]:
    """Tile configurations a backend offers for a problem; [] until the kernels expose them.

    Looks for `jax_na.backends.tile_configs(backend, q_shape, kv_shape, dtype, kernel_size, stride,
    dilation, is_causal) -> list[dict]` (see BENCHMARKS.md, "What the profiler needs").
    """
    fn = getattr(jax_na.backends, "tile_configs", None) or getattr(jax_na, "tile_configs", None)
    if fn is None or backend == "reference":
        return []
    try:
        return list(fn(backend, p.q_shape(), p.kv_shape(), p.dtype, p.kernel, p.stride, p.dilation, p.causal))
    except Exception:  # noqa: BLE001 - a backend that cannot say offers no configs
        return []


def api_takes_tile_config() -> bool:
    return "tile_config" in inspect.signature(jax_na.neighborhood_attention).parameters


def _na_with_tiles(backend: str, cfg: dict):
    def make(p: Problem):
        def f(q, k, v):
            return jax_na.neighborhood_attention(q, k, v, p.kernel, stride=p.stride, dilation=p.dilation,
                                                 is_causal=p.causal, backend=backend, tile_config=cfg)

        return f

    return make


def _label(cfg: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(cfg.items()))


def candidates(p: Problem) -> list[Peer]:
    """The jax_na backends (× tile configs) that could serve backend=None for this problem."""
    out = []
    for peer in peers_mod.all_peers():
        if peer.kind != "na" or peer.backend is None or peer.why_not(p):
            continue  # dense peers, cuDNN's window, auto, and families of another platform
        cfgs = tile_configs(peer.backend, p) if api_takes_tile_config() else []
        if not cfgs:
            out.append(peer)
        for cfg in cfgs:
            out.append(dataclasses.replace(peer, name=f"{peer.name}[{_label(cfg)}]",
                                           make=_na_with_tiles(peer.backend, cfg), tile_config=dict(cfg)))
    return out


def save_cache(doc: dict, path: str | None = None) -> str:
    path = cache_path(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return path


def dry_run(problems, bench_peers: list[Peer], modes, mem_limit: float, cache: str | None = None,
            max_call_s: float = 3.0) -> str:
    """What a run would do, without running anything: each peer's fate, the profiler's candidates
    (with tile configurations), backend=None's choice and any cached tuning."""
    from .runner import n_input_sets

    entries = load_cache(cache)["entries"]
    lines = [f"dry run on {meta.device_info()['card']} ({peers_mod.platform()}); jax_na families: "
             f"{jax_na.available_families() or '()'}; API takes tile_config: {api_takes_tile_config()}; "
             f"memory limit {mem_limit / 2**30:.1f} GiB"]
    for p in problems:
        n = n_input_sets(p, mem_limit)
        lines += ["", f"{p.name}: {p.describe()}  [{n} input sets of {p.input_set_bytes() / 2**20:.1f} MiB; "
                      f"fwd {p.flops('fwd') / 1e9:.4g} GFLOP]"]
        for peer in bench_peers:
            why = peer.why_not(p)
            if why:
                lines.append(f"  {peer.name:17s} {'all':7s} skip: {why}")
                continue
            for mode in modes:
                mem, pred = peer.memory(p, mode), p.flops(mode) / peer.rate(p)
                if mem + n * p.input_set_bytes() > mem_limit:
                    fate = f"skip: estimated memory {mem / 2**30:.1f} GiB > limit"
                elif pred > max_call_s:
                    fate = f"skip: predicted {pred:.1f} s per call > --max-call-s {max_call_s:g}"
                else:
                    fate = f"would run (est. {mem / 2**30:.2f} GiB, a call predicted ~{pred * 1e3:.3g} ms)"
                lines.append(f"  {peer.name:17s} {mode:7s} {fate}")
        cands = candidates(p)
        lines.append(f"  backend=None here: {peers_mod.auto_choice(p)}")
        lines.append("  profiler candidates (--optimize): " + (", ".join(c.name for c in cands) or "none"))
        bare = [c.name for c in cands if c.tile_config is None and c.backend != "reference"]
        if bare:
            lines.append(f"    no tile configurations exposed by: {', '.join(bare)}")
        for d in DIRECTIONS:
            e = entries.get(problem_key(p, d))
            if e:
                lines.append(f"  cached best {d}: {e['backend']} {e.get('tile_config') or ''} {e['time_ms']:.4g} ms ({e.get('date')})")
    return "\n".join(lines)


def best_by_direction(rows) -> dict[tuple[str, str], list]:
    """{(problem name, direction): [rows ok, fastest first]}."""
    out: dict[tuple[str, str], list] = {}
    for r in rows:
        if r.status == "ok" and r.mode in DIRECTIONS:
            out.setdefault((r.problem.name, r.mode), []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r.timing.median_s)
    return out


def update_cache(rows, run_meta: dict, cache: str | None = None) -> tuple[str, list[str]]:
    """Write the fastest candidate per (problem, direction); returns (path, summary lines)."""
    doc = load_cache(cache)
    lines = []
    for (name, direction), ranked in best_by_direction(rows).items():
        best = ranked[0]
        key = problem_key(best.problem, direction, run_meta.get("device_kind"))
        doc["entries"][key] = {
            "backend": best.backend, "tile_config": best.tile_config, "time_ms": best.timing.median_s * 1e3,
            "candidates": {r.peer: round(r.timing.median_s * 1e3, 6) for r in ranked},
            "date": run_meta.get("date"), "jax_version": run_meta.get("jax_version"),
            "git_commit": run_meta.get("git_commit")}
        others = ", ".join(f"{r.peer} {r.timing.median_s * 1e3:.4g}" for r in ranked[1:])
        lines.append(f"best {name} {direction}: {best.peer} {best.timing.median_s * 1e3:.4g} ms"
                     + (f" (others, ms: {others})" if others else ""))
    return save_cache(doc, cache), lines
