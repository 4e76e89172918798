"""Derived numbers (TFLOP/s, speedup, % of floor) and the outputs: terminal table, JSON,
Markdown table, PNG chart."""

from __future__ import annotations

import json

from . import floors as floors_mod

BASELINES = ("cudnn-full", "xla-full", "reference")  # speedup is over the first that ran
_SHORT = {"cudnn-full": "cudnn", "xla-full": "xla", "reference": "ref"}
REL_ERR_TOL = {"float32": 1e-3, "bfloat16": 2e-2, "float16": 1e-2}


def derive(rows, floors: dict | None, monitor=None) -> list[dict]:
    """One JSON-ready dict per row, with time, TFLOP/s, speedup, floor and status; with a
    gpu_monitor.GpuMonitor, the SM clock and power during each timed row ("gpu")."""
    base: dict[tuple, tuple[str, float]] = {}
    for name in reversed(BASELINES):
        for r in rows:
            if r.peer == name and r.status == "ok":
                base[(r.problem.name, r.mode)] = (name, r.timing.median_s)
    out = []
    for r in rows:
        d = {"problem": r.problem.name, "shape": r.problem.describe(), "mode": r.mode, "peer": r.peer,
             "kind": r.kind, "backend": r.backend, "tile_config": r.tile_config, "status": r.status,
             "reason": r.reason, "applicable": r.applicable, "flops": r.problem.flops(r.mode), "min_bytes": r.problem.min_bytes(r.mode)}
        if r.status == "ok":
            t = r.timing
            d.update(t.to_json())
            d["time_ms"] = t.median_s * 1e3
            d["compile_s"] = round(r.compile_s or 0.0, 3)
            d["n_input_sets"] = r.n_input_sets
            if r.host_median_s is not None:  # chained (timing.chain): the blocks-of-calls time too
                d["host_timed_ms"] = r.host_median_s * 1e3
            if monitor is not None and r.t_start is not None and r.t_end is not None:
                d["gpu"] = monitor.window(r.t_start, r.t_end)
            d["tflops"] = r.problem.flops(r.mode) / t.median_s / 1e12
            b = base.get((r.problem.name, r.mode))
            if b:
                d["baseline"], d["speedup"] = b[0], b[1] / t.median_s
            fl, bound = floors_mod.floor_s(r.problem, r.mode, floors)
            if fl:
                d["floor_ms"], d["bound"], d["pct_floor"] = fl * 1e3, bound, 100.0 * fl / t.median_s
            if r.rel_err is not None:
                d["rel_err"], d["rel_err_vs"] = r.rel_err, r.rel_err_vs
                d["rel_err_ok"] = bool(r.rel_err <= REL_ERR_TOL[r.problem.dtype])
        out.append(d)
    return out


def _fmt_ms(ms: float) -> str:
    return f"{ms:.4f}" if ms < 0.1 else f"{ms:.3f}" if ms < 100 else f"{ms:.1f}"


def _cells(d: dict) -> list[str]:
    if d["status"] != "ok":
        return [d["problem"], d["mode"], d["peer"], "—", "", "", "", "", "", f"{d['status']}: {d['reason']}"]
    spd = f"{d['speedup']:.2f}× {_SHORT[d['baseline']]}" if "speedup" in d else ""
    pct = f"{d['pct_floor']:.1f}% {d['bound'][:3]}" if "pct_floor" in d else ""
    err = ""
    if "rel_err" in d:
        err = f"{d['rel_err']:.1e}" + ("" if d["rel_err_ok"] else " BAD")
    note = d.get("reason", "")
    if "host_timed_ms" in d:
        note = f"×{d['calls_per_dispatch']} chained (host-timed {_fmt_ms(d['host_timed_ms'])})" + (
            f"; {note}" if note else "")
    return [d["problem"], d["mode"], d["peer"], _fmt_ms(d["time_ms"]),
            f"{_fmt_ms(d['p10_ms'])}–{_fmt_ms(d['p90_ms'])}", f"{d['tflops']:.3g}", spd, pct, err, note]


HEADER = ["problem", "mode", "peer", "ms", "p10–p90 ms", "TFLOP/s", "speedup", "% floor", "rel.err", "note"]


def _sorted(derived):
    order = {m: i for i, m in enumerate(("fwd", "fwd+bwd", "bwd"))}
    probs = list(dict.fromkeys(d["problem"] for d in derived))
    return sorted(derived, key=lambda d: (probs.index(d["problem"]), order.get(d["mode"], 9)))


def header_lines(meta: dict, floors: dict | None) -> list[str]:
    lines = [f"card: {meta.get('card')} ({meta.get('platform')}, {meta.get('cpu_count')} CPU threads)"
             f" | jax {meta.get('jax_version')} | jax_na {meta.get('jax_na_version')} families "
             f"{meta.get('available_families') or '()'} | {meta.get('date')} | commit {meta.get('git_commit')}"
             + (f" | load avg {meta['load_average'][0]}" if meta.get("load_average") else "")]
    if floors:
        mm = ", ".join(f"{dt} {v['flops_per_s'] / 1e12:.3g} TFLOP/s (n={v['n']})" for dt, v in floors["matmul"].items())
        lines.append(f"floors: matmul {mm}; copy {floors['copy']['bytes_per_s'] / 1e9:.4g} GB/s; "
                     f"dispatch {floors['dispatch_us']:.1f} µs/call")
    g = meta.get("gpu")
    if g:  # gpu_monitor: the card's state over the run (each row's own in the JSON, "gpu")
        lines.append(f"gpu during the run: SM clock median {g['sm_clock_mhz_median']:.0f} MHz (min "
                     f"{g['sm_clock_mhz_min']:.0f}); power median {g['power_w_median']:.0f} W, max "
                     f"{g['power_w_max']:.0f} W of {g['power_limit_w']:.0f} W; at the limit "
                     f"{100 * g['at_power_limit']:.0f}% of {g['samples']} samples")
    lines.append("ms = median per call; TFLOP/s = effective NA work (fwd 4·B·H·N·prod(k)·D, fwd+bwd 3.5×); "
                 "speedup = baseline time / time (cudnn = cuDNN full attention, else xla full, else ref); "
                 "% floor = max(FLOPs/matmul rate, min bytes/copy rate) / time")
    return lines


def _not_applicable(derived) -> list[str]:
    why: dict[str, dict] = {}
    for d in derived:
        if not d.get("applicable", True):
            why.setdefault(d["peer"], {})[d["reason"]] = None
    if not why:
        return []
    return ["not applicable here (omitted above): " + "; ".join(f"{p} ({' / '.join(r)})" for p, r in why.items())]


def table(derived, meta: dict, floors: dict | None, max_note: int = 70) -> str:
    derived_all, derived = derived, [d for d in derived if d.get("applicable", True)]
    rows = [_cells(d) for d in _sorted(derived)]
    for r in rows:
        if len(r[-1]) > max_note:
            r[-1] = r[-1][: max_note - 1] + "…"
    widths = [max(len(str(x)) for x in col) for col in zip(HEADER, *rows)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) if i in (0, 1, 2, 6, 7, 9) else str(c).rjust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = header_lines(meta, floors) + ["", fmt(HEADER), fmt(["-" * w for w in widths])]
    prev = None
    for d, r in zip(_sorted(derived), rows):
        if prev is not None and (d["problem"], d["mode"]) != prev:
            out.append("")
        prev = (d["problem"], d["mode"])
        out.append(fmt(r))
    shapes = dict.fromkeys(f"{d['problem']}: {d['shape']}" for d in _sorted(derived))
    out += ["", "problems: " + "; ".join(shapes)] + _not_applicable(derived_all)
    return "\n".join(out)


def markdown(derived, meta: dict, floors: dict | None) -> str:
    """The same table as Markdown (for BENCHMARKS.md)."""
    derived_all, derived = derived, [d for d in derived if d.get("applicable", True)]
    out = [f"- {line}" for line in header_lines(meta, floors)[:2]] + [""]
    out.append("| " + " | ".join(HEADER) + " |")
    out.append("|" + "---|" * len(HEADER))
    for d in _sorted(derived):
        out.append("| " + " | ".join(str(c).replace("|", "/") for c in _cells(d)) + " |")
    shapes = dict.fromkeys(f"{d['problem']}: {d['shape']}" for d in _sorted(derived))
    out += ["", "Problems: " + "; ".join(shapes) + "."] + ["", *_not_applicable(derived_all)]
    return "\n".join(out)


def write_json(path: str, derived, meta: dict, floors: dict | None, extra: dict | None = None) -> None:
    doc = {"meta": meta, "floors": floors, "rows": derived, **(extra or {})}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)


def write_png(path: str, derived, meta: dict) -> None:
    """Horizontal bars per problem, one panel per mode: speedup over the baseline (log scale);
    TFLOP/s where no baseline ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [d for d in derived if d["status"] == "ok"]
    modes = [m for m in ("fwd", "fwd+bwd", "bwd") if any(d["mode"] == m for d in ok)] or ["fwd"]
    use_speedup = any("speedup" in d for d in ok)
    peers = [p for p in dict.fromkeys(d["peer"] for d in ok)
             if not (use_speedup and all(d.get("baseline") == p for d in ok if d["peer"] == p))]
    problems = list(dict.fromkeys(d["problem"] for d in derived))
    fig, axes = plt.subplots(1, len(modes), squeeze=False,
                             figsize=(6 * len(modes), 1.5 + 0.18 * len(problems) * max(2, len(peers))))
    height = 0.8 / max(1, len(peers))
    for ax, mode in zip(axes[0], modes):
        for j, peer in enumerate(peers):
            ys, xs = [], []
            for i, prob in enumerate(problems):
                d = next((d for d in ok if d["mode"] == mode and d["peer"] == peer and d["problem"] == prob), None)
                if d is None:
                    continue
                val = d.get("speedup") if use_speedup else d["tflops"]
                if val:
                    ys.append(i + (j - (len(peers) - 1) / 2) * height)
                    xs.append(val)
            if xs:
                ax.barh(ys, xs, height=height, label=peer)
        ax.set_yticks(range(len(problems)), problems)
        ax.invert_yaxis()
        if use_speedup:
            ax.set_xscale("log")
            ax.axvline(1.0, color="k", lw=0.8)
            ax.set_xlabel("speedup over baseline (cuDNN full attention, else XLA full, else reference)")
        else:
            ax.set_xlabel("effective TFLOP/s")
        ax.set_title(mode)
        ax.grid(axis="x", alpha=0.3, which="both")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"jax_na benchmarks — {meta.get('card')} — jax {meta.get('jax_version')} — "
                 f"{meta.get('date')} — {meta.get('git_commit')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)



def main(argv=None) -> int:
    """`python -m benchmarks.report RESULT.json [--md]`: print a saved run's table (or Markdown)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    ap.add_argument("json_path")
    ap.add_argument("--md", action="store_true", help="Markdown instead of the terminal table")
    ap.add_argument("--png", help="also redraw the chart here")
    a = ap.parse_args(argv)
    with open(a.json_path) as f:
        doc = json.load(f)
    rows, meta, floors = doc["rows"], doc["meta"], doc.get("floors")
    if a.png:
        write_png(a.png, rows, meta)
    print(markdown(rows, meta, floors) if a.md else table(rows, meta, floors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
