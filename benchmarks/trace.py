"""Device timeline of one jitted step through JAX: which kernels run, how long each takes per
step, and how long the device sits idle between them (a jax.profiler trace of a few steps, read
back with jax.profiler.ProfileData). What `run.py`'s per-call times do not show: XLA's own
fusions beside ours (the backward's delta reduction), memsets, repair launches, launch gaps.
Steps rotate among as many input sets as run.py uses (L2-cold inputs, as in its timings);
`--chain n` traces steps as run.py times fast ones, n chained calls per step; `--events` lists
the last step's events with their start times (what overlaps what: XLA's delta reduction starts
under the forward's tail, as a programmatic dependent launch).

`python benchmarks/trace.py --problems V1 --peer jax_na:cuda-fused --mode fwd+bwd`
`python benchmarks/trace.py --problems K31 --peer jax_na:cuda-hopper --chain 4`
GPU only: on CPU the trace holds no device plane, and the script says so.
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile

if __package__ in (None, ""):  # `python benchmarks/trace.py`: make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from benchmarks import meta, peers as peers_mod, problems as problems_mod, runner, timing  # noqa: E402


def device_events(xplane_path: str) -> list[tuple[int, int, str]]:
    """(start ns, duration ns, name) of every event on the device planes' stream lines."""
    data = jax.profiler.ProfileData.from_file(xplane_path)
    return sorted((ev.start_ns, ev.duration_ns, ev.name) for plane in data.planes
                  if plane.name.startswith("/device:") for line in plane.lines
                  if "stream" in line.name.lower() for ev in line.events)


def summarise(events, steps: int) -> dict:
    """Per step: the span from the first event's start to the last one's end, each event name's
    total time and count, and the time no event covers (gaps), in microseconds."""
    per = collections.defaultdict(lambda: [0.0, 0])
    gaps, end = 0.0, None
    for start, dur, name in sorted(events):
        per[name][0] += dur / 1e3 / steps
        per[name][1] += 1
        if end is not None and start > end:
            gaps += (start - end) / 1e3
        end = start + dur if end is None else max(end, start + dur)
    span = (end - min(e[0] for e in events)) / 1e3 / steps if events else 0.0
    kernels = sorted(((n, t, c / steps) for n, (t, c) in per.items()), key=lambda x: -x[1])
    return {"span_us": span, "kernels": kernels, "gaps_us": gaps / steps}


def print_last_step(events, steps: int) -> None:
    """The last step's events (each step has the same events), in start order: start in us from
    the step's first event, duration, end, name."""
    last = sorted(events)[-(len(events) // steps):]
    t0 = last[0][0]
    print("  last step:   start      dur      end")
    for start, dur, name in last:
        print(f"    {(start - t0) / 1e3:9.1f} {dur / 1e3:8.1f} {(start + dur - t0) / 1e3:8.1f}  {name[:90]}")


def trace_step(fn, arg_sets, steps: int) -> list[tuple[int, int, str]]:
    """Compile fn, run it once per input set, then trace `steps` calls rotating among the sets
    as run.py's timings do (so L2 holds no call's inputs when it starts); their device events."""
    compiled, _ = timing.compile_fn(fn, arg_sets[0])
    for args in arg_sets:
        jax.block_until_ready(compiled(*args))
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        out = None
        for i in range(steps):
            out = compiled(*arg_sets[i % len(arg_sets)])
        jax.block_until_ready(out)
        jax.profiler.stop_trace()
        paths = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
        return device_events(paths[0]) if paths else []


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/trace.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(problems_mod.SUITES), default="anchors")
    ap.add_argument("--problems", required=True, help="comma list of problem names of the suite")
    ap.add_argument("--peer", default="jax_na:auto", help="one peer of run.py's (e.g. jax_na:cuda-hopper)")
    ap.add_argument("--mode", default="fwd", choices=("fwd", "fwd+bwd"))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", type=int, default=None,
                    help="input sets to rotate among (default: as many as run.py uses for the problem)")
    ap.add_argument("--chain", type=int, default=1,
                    help="trace steps of n chained calls (timing.chain, as run.py times fast forwards "
                         "and fwd+bwd steps), so that the gaps inside a step are those between calls")
    ap.add_argument("--events", action="store_true",
                    help="also list the last step's events: start (from the step's first), duration, name")
    a = ap.parse_args(argv)
    peer = [p for p in peers_mod.all_peers() if p.name == a.peer]
    if not peer:
        ap.error(f"--peer {a.peer!r} is not one of {[p.name for p in peers_mod.all_peers()]}")
    for p in problems_mod.select(problems_mod.SUITES[a.suite], a.problems):
        n_sets = a.sets or runner.n_input_sets(p, runner.Limits.mem_frac * meta.available_memory_bytes())
        fn, arg_sets = runner.args_for(a.mode, peer[0].make(p), runner.make_inputs(p, n_sets, a.seed))
        if a.chain > 1:
            fn, arg_sets = (timing.chain(fn, a.chain, len(arg_sets), len(arg_sets[0])),
                            [[x for s in arg_sets for x in s]])
        events = trace_step(fn, arg_sets, a.steps)
        s = summarise(events, a.steps)
        if not s["kernels"]:
            print(f"{p.name} {a.mode}: no device events (no GPU, or the profiler saw none)")
            continue
        print(f"{p.name} {a.mode} {a.peer}: {s['span_us']:.1f} us per step ({n_sets} input sets"
              f"{f', {a.chain} chained calls per step' if a.chain > 1 else ''})")
        for name, us, n in s["kernels"]:
            print(f"  {us:9.1f} us  x{n:<4g} {name[:100]}")
        print(f"  {s['gaps_us']:9.1f} us  gaps between events")
        if a.events:
            print_last_step(events, a.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
