"""The one command: `python benchmarks/run.py --suite anchors --json out.json --png out.png`.

Suites: quick (CPU, seconds), vision (NAT/DiNAT stages), anchors (shared/benchmarks.md), or a
custom problem with --dims/--kernel/... . Modes: forward and forward+backward. --dry-run lists
what would run (and the profiler's candidates) without running; --optimize times the jax_na
backends (forward and backward alone) and writes the winners to the tuning cache.
Progress goes to stderr; the table is printed last, to stdout. See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if __package__ in (None, ""):  # `python benchmarks/run.py`: make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import problems as problems_mod  # noqa: E402

# Per-suite defaults: whole-run time limit (s), measuring budget per row (s).
SUITE_DEFAULTS = {"quick": (45.0, 0.3), "vision": (200.0, 1.5), "anchors": (300.0, 1.5), "custom": (120.0, 2.0)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(problems_mod.SUITES), default="quick")
    ap.add_argument("--problems", help="comma list of problem names of the suite to keep (e.g. A1,V1)")
    g = ap.add_argument_group("custom problem (replaces --suite)")
    g.add_argument("--dims", type=int, nargs="+", help="spatial extents, e.g. 56 56")
    g.add_argument("--kernel", type=int, nargs="+")
    g.add_argument("--stride", type=int, nargs="+")
    g.add_argument("--dilation", type=int, nargs="+")
    g.add_argument("--causal", type=int, nargs="+", help="0/1 per dim")
    g.add_argument("--heads", type=int, default=1)
    g.add_argument("--kv-heads", type=int, default=None)
    g.add_argument("--head-dim", type=int, default=32)
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--dtype", default="bf16", choices=sorted(problems_mod.DTYPE_ALIASES))
    ap.add_argument("--peers", help="comma list of peers (prefixes ok, e.g. cudnn,jax_na)")
    ap.add_argument("--modes", default="fwd,fwd+bwd", help="comma list of fwd, fwd+bwd")
    ap.add_argument("--json", help="write all results here")
    ap.add_argument("--png", help="write a chart of speedups here")
    ap.add_argument("--md", help="write the table as Markdown here")
    ap.add_argument("--time-limit", type=float, help="seconds for the whole run; later rows are skipped")
    ap.add_argument("--max-row-s", type=float, help="measuring budget of one row, seconds")
    ap.add_argument("--max-call-s", type=float, default=3.0, help="skip calls predicted slower (s)")
    ap.add_argument("--mem-frac", type=float, default=0.8, help="fraction of device memory a row may use")
    ap.add_argument("--no-floors", action="store_true", help="skip measuring the matmul/copy ceilings")
    ap.add_argument("--floor-budget-s", type=float, default=1.0, help="measuring budget of each ceiling")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chain-below-ms", type=float,
                    help="time forwards and fwd+bwd steps faster than this also chained, n calls per "
                         "dispatch, and report that (device-bound; default 1 on GPU, 0 = off on CPU)")
    ap.add_argument("--dry-run", action="store_true", help="list what would run; run nothing")
    ap.add_argument("--optimize", action="store_true", help="time the jax_na backends, cache the best")
    ap.add_argument("--cache", help="tuning cache path (default $JAX_NA_TUNING_CACHE or ~/.cache/jax_na/tuning.json)")
    return ap.parse_args(argv)


def chosen_problems(a):
    if a.dims:
        return "custom", (problems_mod.custom(a.dims, a.kernel, a.stride, a.dilation, a.causal, a.heads,
                                              a.head_dim, a.batch, a.dtype, a.kv_heads),)
    return a.suite, problems_mod.select(problems_mod.SUITES[a.suite], a.problems)


def main(argv=None) -> int:
    t_start = time.perf_counter()
    a = parse_args(argv)
    try:
        suite, probs = chosen_problems(a)
        for p in probs:
            problems_mod.validate(p)
    except (ValueError, TypeError) as e:
        raise SystemExit(f"benchmarks/run.py: invalid problem: {e}")
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in problems_mod.MODES]
    if bad:
        raise SystemExit(f"--modes takes {problems_mod.MODES}, got {bad}")

    from benchmarks import gpu_monitor, meta, peers as peers_mod, profiler, report, runner

    limit_default, row_default = SUITE_DEFAULTS[suite]
    limits = runner.Limits(time_limit_s=a.time_limit or limit_default, max_row_s=a.max_row_s or row_default,
                           min_row_s=min(0.2, a.max_row_s or row_default), max_call_s=a.max_call_s,
                           mem_frac=a.mem_frac, seed=a.seed,
                           chain_below_s=None if a.chain_below_ms is None else a.chain_below_ms * 1e-3)
    bench_peers = peers_mod.select(peers_mod.all_peers(), a.peers)

    if a.dry_run:
        print(profiler.dry_run(probs, bench_peers, modes, a.mem_frac * meta.available_memory_bytes(), a.cache,
                               a.max_call_s))
        return 0

    run_meta = meta.collect(sys.argv if argv is None else ["benchmarks/run.py", *argv])
    run_meta["suite"] = suite
    with gpu_monitor.GpuMonitor() as monitor:
        rows, floors, extra = _measure(a, probs, bench_peers, modes, limits, run_meta, t_start, monitor)
    run_meta["gpu"] = monitor.summary()
    derived = report.derive(rows, floors, monitor)
    run_meta["wall_s"] = round(time.perf_counter() - t_start, 1)
    if a.json:
        report.write_json(a.json, derived, run_meta, floors, extra)
    if a.md:
        with open(a.md, "w") as f:
            f.write(report.markdown(derived, run_meta, floors) + "\n")
    if a.png:
        try:
            report.write_png(a.png, derived, run_meta)
        except Exception as e:  # noqa: BLE001 - matplotlib is optional; the table must still print
            print(f"no PNG written ({type(e).__name__}: {e})", file=sys.stderr)
    print(report.table(derived, run_meta, floors))
    if a.optimize:
        print("\n" + "\n".join(extra["best"]) + f"\ntuning cache: {extra['tuning_cache']}")
    print(f"\nwall time {run_meta['wall_s']} s" + (f"; json {a.json}" if a.json else "")
          + (f"; png {a.png}" if a.png else ""))
    return 0


def _measure(a, probs, bench_peers, modes, limits, run_meta, t_start, monitor):
    """Floors, then the rows (or the profiler's candidates with --optimize): (rows, floors, extra)."""
    from benchmarks import floors as floors_mod, peers as peers_mod, profiler, report, runner

    floors = None
    if not a.no_floors:
        print("measuring floors (matmul rate, copy bandwidth, dispatch)...", file=sys.stderr, flush=True)
        floors = floors_mod.measure({p.dtype for p in probs}, budget_s=a.floor_budget_s)

    for path in (a.json, a.png, a.md):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
    extra = {}
    limits.deadline = t_start + limits.time_limit_s  # the limit counts from process start
    done_rows = []

    def save_partial(row):  # a run cut short (timeout, crash) still leaves its rows
        done_rows.append(row)
        if a.json:
            report.write_json(a.json, report.derive(done_rows, floors, monitor), {**run_meta, "partial": True},
                              floors)

    if a.optimize:
        rows = []
        for p in probs:  # candidates depend on the problem (tile configs)
            rows += runner.run((p,), peers_mod.select(profiler.candidates(p), a.peers), profiler.DIRECTIONS,
                               limits, on_row=save_partial)
        path, best = profiler.update_cache(rows, run_meta, a.cache)
        extra["tuning_cache"], extra["best"] = path, best
    else:
        rows = runner.run(probs, bench_peers, modes, limits, on_row=save_partial)
    return rows, floors, extra


if __name__ == "__main__":
    sys.exit(main())
