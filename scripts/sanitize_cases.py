"""Edge-shape cases for compute-sanitizer, and the parser of its logs (driven by scripts/sanitize.sh).

Modes:
  python scripts/sanitize_cases.py --families            CUDA families to check, one line
  python scripts/sanitize_cases.py --list --tool T       the cases tool T runs (no GPU needed)
  python scripts/sanitize_cases.py --run --tool T [--family F ...]
        runs them: jax.jit(value_and_grad) of <out, dout> + <lse, dlse> per case and family,
        i.e. the forward AND backward kernels; prints one "CASE ..." line per run and
        "DRIVER DONE ..." last. Meant to run under compute-sanitizer.
  python scripts/sanitize_cases.py --summarize LOGDIR [--tools ...] [--families ...]
        parses LOGDIR/<tool>.log and prints the tool x family table; exit status 1 on any error.

Cases: 1-D/2-D/3-D, odd extents that are multiples of no tile, kernel == extent, dilation,
stride, per-dim causal, GQA/MQA, float32/float16/bfloat16, head_dim 32/64/128/256 on every family
and odd head dims (33, 40) on cuda-naive only (the tiled families route those to cuda-naive
anyway), cuda-hopper's bias-mask forward on cuda-hopper only, and a NaN value token (the tiled
families' non-finite repair then scans and recomputes: cuda/repair/; its kernel's reports count
as family cuda-repair). racecheck instruments every shared-memory access and is slow: it runs a
few tiny cases.
--quick runs a subset that still covers 1-D/2-D/3-D, the three dtypes, head_dim 32/64/128/256 and an
odd head_dim (for scripts/gpu_check.sh's time budget). A case that a family routes to another
family (e.g. cuda-hopper's float32 problems to cuda-fused) is checked once, on that family.

Families: every cuda-* family of jax_na.available_families() (discovered, not listed here).
Attribution of sanitizer reports: by the kernel's namespace (jax_na::<family>::) or source path
(cuda/<family>/) in the report; compute-sanitizer is also told to check only kernels whose name
contains "jax_na", so XLA's own kernels are not instrumented.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time

TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    spatial: tuple
    kw: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)
    heads: int = 2
    heads_kv: int = 1
    head_dim: int = 32
    dtype: str = "bfloat16"
    batch: int = 1
    # the one family that runs it ("" = all): cuda-naive for odd head dims (the tiled families
    # would route them there); cuda-hopper for its own paths too slow under the sanitizers elsewhere
    only: str = ""
    quick: bool = False  # in the --quick subset (scripts/gpu_check.sh's time budget)
    nan_value: bool = False  # a NaN in one value token: the tiled families' repair launch scans

    def describe(self) -> str:
        kw = " ".join(f"{k}={v}" for k, v in self.kw.items())
        return (f"{self.name}: B={self.batch} spatial={self.spatial} H={self.heads}/{self.heads_kv} "
                f"D={self.head_dim} {self.dtype} {kw}")


C = Case
# Every tool but racecheck. Extents are odd / not multiples of any tile (64 rows, 8x8, 4x4x4 ...).
CASES = (
    C("1d-dil-stride-gqa", (37,), dict(kernel_size=5, dilation=3, stride=2), 4, 2, 32, "bfloat16", quick=True),
    C("1d-causal-k=L", (16,), dict(kernel_size=16, is_causal=True), 2, 1, 64, "float16", quick=True),
    C("1d-causal-large-k-d128", (131,), dict(kernel_size=67, stride=3, is_causal=True), 2, 2, 128,
      "bfloat16", quick=True),
    C("1d-f32-d64", (29,), dict(kernel_size=6, stride=4), 3, 1, 64, "float32", batch=2),
    C("2d-mixed", (11, 13), dict(kernel_size=(3, 5), dilation=(2, 1), stride=(1, 2),
                                 is_causal=(True, False)), 4, 2, 64, "bfloat16", quick=True),
    C("2d-k=L-d128", (7, 9), dict(kernel_size=(7, 9)), 2, 1, 128, "float16"),
    C("2d-f32-d32", (10, 6), dict(kernel_size=(4, 3), stride=(3, 1), is_causal=(False, True)), 2, 2,
      32, "float32"),
    C("3d-mixed", (5, 6, 7), dict(kernel_size=3, stride=(1, 2, 1), dilation=(1, 1, 2),
                                  is_causal=(False, True, False)), 3, 1, 32, "bfloat16"),
    C("3d-f32-d128", (4, 5, 6), dict(kernel_size=(2, 3, 4), dilation=(2, 1, 1)), 2, 2, 128, "float32", quick=True),
    C("3d-causal-d64-f16", (3, 6, 5), dict(kernel_size=(3, 2, 5), is_causal=True), 2, 1, 64, "float16"),
    C("1d-odd-d33-f16", (23,), dict(kernel_size=5, dilation=2), 4, 2, 33, "float16", only="cuda-naive"),
    C("2d-odd-d33-f32", (9, 11), dict(kernel_size=(3, 4), stride=(1, 2), is_causal=(True, False)), 2, 1,
      33, "float32", only="cuda-naive", quick=True),
    C("3d-d40-bf16", (3, 4, 5), dict(kernel_size=(2, 3, 3)), 2, 2, 40, "bfloat16", only="cuda-naive"),
    C("2d-d256-bf16", (9, 11), dict(kernel_size=(3, 5), stride=(1, 2), is_causal=(False, True)), 2, 1,
      256, "bfloat16", quick=True),
    C("1d-nan-value-repair", (150,), dict(kernel_size=17, stride=2, is_causal=True), 4, 2, 64,
      "bfloat16", quick=True, nan_value=True),
    # cuda-hopper's RD backward (delta formed in the dQ kernel; cuda/hopper/rd_rule.h), with a NaN
    # so that its repair launch runs too.
    C("2d-rd-nan-value", (13, 11), dict(kernel_size=5), 2, 1, 32, "bfloat16", quick=True,
      nan_value=True),
    # cuda-hopper's forward with masks by the tensor core (bf16 head_dim 128, 2-D 128-key tiles:
    # the BiasTile in shared memory; cuda/hopper/instantiate.h).
    C("2d-bias-masks-d128", (34, 66), dict(kernel_size=(32, 64), stride=(2, 1)), 2, 1, 128,
      "bfloat16", only="cuda-hopper", quick=True),
)
# racecheck: tiny problems, one per code path with shared memory (tensor-core 2-D and 1-D, head
# dim 256 (two warpgroups per CTA in cuda-hopper's backward), the naive family's per-warp
# buffers at an odd head_dim), and two with over twice as many 128-query tiles as an H100 has
# SMs, so that cuda-hopper's persistent forward CTAs take three tiles and reuse each shared tile
# slot (1-D non-causal: tiles round robin; 2-D: from the counter).
RACE_CASES = (
    C("race-2d-bf16-d64", (9, 10), dict(kernel_size=(3, 5), dilation=(1, 2), is_causal=(True, False)),
      2, 1, 64, "bfloat16"),
    C("race-1d-persistent", (1100,), dict(kernel_size=33), 8, 4, 64, "bfloat16", batch=4),
    C("race-2d-persistent", (40, 40), dict(kernel_size=(5, 7)), 24, 24, 64, "bfloat16"),
    C("race-1d-f16-d128", (40,), dict(kernel_size=7, stride=2, is_causal=True), 2, 2, 128, "float16"),
    C("race-2d-bf16-d256", (9, 10), dict(kernel_size=(3, 5)), 2, 1, 256, "bfloat16"),
    C("race-1d-f32-d33", (12,), dict(kernel_size=3), 2, 1, 33, "float32", only="cuda-naive"),
    C("race-2d-rd", (9, 10), dict(kernel_size=(3, 5)), 2, 1, 32, "bfloat16"),  # RD's out tile
    C("race-2d-bias-masks", (34, 66), dict(kernel_size=(32, 64), stride=(2, 1)), 2, 1, 128,
      "bfloat16", only="cuda-hopper"),  # its BiasTile
)


def cases_for(tool: str, quick: bool = False):
    if tool == "racecheck":
        return RACE_CASES
    return tuple(c for c in CASES if c.quick or not quick)


def runs_on(case: Case, family: str) -> bool:
    return not case.only or family == case.only


# --- families ---------------------------------------------------------------------------------

def cuda_families(built_only: bool = False) -> list:
    """cuda-* families that can run here; with built_only (no GPU: dry runs), those built."""
    import jax_na
    from jax_na import _native

    fams = [f for f in jax_na.available_families() if f.startswith("cuda-")]
    if not fams and built_only:
        fams = [f for f in _native.CUDA_FAMILIES if _native.has_family(f)] or list(_native.CUDA_FAMILIES)
    return fams


# --- running ----------------------------------------------------------------------------------

# No command buffers (every kernel is a plain launch the sanitizer attributes to a call) and no
# autotuning (no extra kernels of XLA's own).
COMPILER_OPTIONS = {"xla_gpu_enable_command_buffer": "", "xla_gpu_autotune_level": 0}
# (sanitize.sh also sets them in XLA_FLAGS, for programs JAX compiles on its own.)


def _unsupported(err: Exception) -> bool:
    msg = str(err).lower()
    return "not support" in msg or "notsupported" in msg or "unsupported gpu" in msg


def run_case(case: Case, family: str, seed: int) -> bool:
    """Forward, then backward, as two programs whose tensors are all program arguments or
    results (so each is its own allocation under XLA's platform allocator, and memcheck sees its
    exact bounds): fwd returns out, lse and the vjp residuals; bwd takes the residuals and
    the cotangents. True if every result is finite (with case.nan_value: if some result is finite
and some is not, as the NaN value token reaches only its neighbourhood)."""
    import jax
    import numpy as np

    import jax_na

    rng = np.random.default_rng(seed)
    dt = np.dtype(jax.numpy.dtype(case.dtype))
    shape_q = (case.batch, *case.spatial, case.heads, case.head_dim)
    shape_kv = (case.batch, *case.spatial, case.heads_kv, case.head_dim)
    q = jax.device_put(rng.standard_normal(shape_q).astype(dt))
    k = jax.device_put(rng.standard_normal(shape_kv).astype(dt))
    v = rng.standard_normal(shape_kv).astype(dt)
    if case.nan_value:
        v[(0,) + tuple(n // 2 for n in case.spatial)] = np.nan
    v = jax.device_put(v)
    dout = jax.device_put(rng.standard_normal(shape_q).astype(dt))
    dlse = jax.device_put(rng.standard_normal(shape_q[:-1]).astype(np.float32))

    def f(q, k, v):
        return jax_na.neighborhood_attention(q, k, v, **case.kw, return_lse=True, backend=family)

    fwd = jax.jit(lambda q, k, v: jax.vjp(f, q, k, v), compiler_options=COMPILER_OPTIONS)
    (out, lse), vjp_fn = fwd(q, k, v)
    bwd = jax.jit(lambda fn, ct: fn(ct), compiler_options=COMPILER_OPTIONS)
    grads = bwd(vjp_fn, (dout, dlse))
    results = [np.asarray(x, np.float32) for x in (out, lse, *grads)]
    if case.nan_value:
        fin = np.concatenate([np.isfinite(x).ravel() for x in results])
        return bool(fin.any() and not fin.all())
    return all(bool(np.all(np.isfinite(x))) for x in results)


def routed_to(case: Case, family: str) -> str:
    """The family that actually runs `case` when `family` is asked for (the Python side routes
    problems a family's kernels lack, e.g. odd head dims to cuda-naive)."""
    try:
        import jax.numpy as jnp
        from jax_na import backends

        return backends.family_for("cuda", family, jnp.dtype(case.dtype), case.head_dim) or family
    except Exception:  # noqa: BLE001 - the routing table's signature is not ours to pin
        return family


def run(tool: str, families: list, only: str | None, quick: bool) -> int:
    os.environ.setdefault("JAX_NA_TUNING", "0")
    cases = [c for c in cases_for(tool, quick) if only is None or re.search(only, c.name)]
    n_ok = n_ref = n_fail = 0
    t0 = time.time()
    print(f"DRIVER START tool={tool} families={','.join(families)} cases={len(cases)}", flush=True)
    for fam in families:
        for i, case in enumerate(cases):
            if not runs_on(case, fam):
                continue
            actual = routed_to(case, fam)
            if actual != fam and actual in families:
                print(f"CASE {fam} {case.name} routed: runs on {actual}, checked there", flush=True)
                continue
            t = time.time()
            try:
                finite = run_case(case, fam, seed=1000 + i)
                status = "ok" if finite else "FAILED: non-finite result"
                n_ok += finite
                n_fail += not finite
            except Exception as e:  # noqa: BLE001 - a family may refuse a (dtype, head_dim)
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                if _unsupported(e):
                    status, n_ref = f"refused: {first}", n_ref + 1
                else:
                    status, n_fail = f"FAILED: {type(e).__name__}: {first}", n_fail + 1
            print(f"CASE {fam} {case.name} {status} ({time.time() - t:.1f}s)", flush=True)
    print(f"DRIVER DONE ok={n_ok} refused={n_ref} failed={n_fail} ({time.time() - t0:.0f}s)", flush=True)
    return 1 if n_fail else 0


# --- parsing sanitizer logs -------------------------------------------------------------------

PREFIX = re.compile(r"^========= ?(.*)$")
# First line of one report (memcheck, initcheck, synccheck, racecheck).
REPORT_START = re.compile(
    r"^(Invalid |Uninitialized |Barrier error|Error: |Warning: |Race reported|Potential |"
    r"Out-of-range|Misaligned|Malloc|Cuda API error|Program hit|Illegal|Host API|Leaked|"
    r"Fatal|Unused memory|Memory access|Hardware exception|Device-side|Invalid global)")
SUMMARY = re.compile(r"^(ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|COMPUTE-SANITIZER|"
                     r"Target application returned|Program finished|Waiting for|"
                     r"Error: process didn't terminate|Error: Target application)")
FAMILY_OF = (re.compile(r"jax_na::(\w+)::"), re.compile(r"cuda/(naive|gemm|fused|hopper|[a-z0-9_]+)/[\w.]+:\d+"),
             re.compile(r"_ZN6jax_na(\d+)(\w+)"))


def _family(block: list) -> str | None:
    text = "\n".join(block)
    m = FAMILY_OF[0].search(text)
    if m and m.group(1) not in ("Problem", "DimParams"):
        return "cuda-" + m.group(1)
    m = FAMILY_OF[1].search(text)
    if m and m.group(1) not in ("common", "ffi"):
        return "cuda-" + m.group(1)
    m = FAMILY_OF[2].search(text)  # mangled: _ZN6jax_na5fused...
    if m:
        n = int(m.group(1))
        return "cuda-" + m.group(2)[:n]
    return None


def parse_log(path: str) -> dict:
    """{'reports': [(family|None, severity, first line)], 'summary_errors': int|None,
    'summary_warnings': int, 'cases': {family: {ok, refused, failed}}, 'done': bool,
    'failed_cases': [...]}"""
    res = dict(reports=[], summary_errors=None, summary_warnings=0, cases={}, done=False,
               failed_cases=[], crashed=None)
    if not os.path.exists(path):
        return res
    block: list = []

    def flush():
        if block:
            sev = "warning" if block[0].startswith("Warning") else "error"
            res["reports"].append((_family(block), sev, block[0][:200]))
            block.clear()

    for raw in open(path, errors="replace"):
        line = raw.rstrip("\n")
        m = PREFIX.match(line)
        if m:
            body = m.group(1)
            if SUMMARY.match(body):
                flush()
                s = re.match(r"ERROR SUMMARY: (\d+) error", body)
                if s:
                    res["summary_errors"] = (res["summary_errors"] or 0) + int(s.group(1))
                s = re.match(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?, (\d+) warnings?\)", body)
                if s:
                    res["summary_errors"] = (res["summary_errors"] or 0) + int(s.group(1))
                    res["summary_warnings"] += int(s.group(2))
                continue
            if REPORT_START.match(body):
                flush()
                block.append(body)
            elif block:
                if body.strip():
                    block.append(body)
                else:
                    flush()
            continue
        flush()
        c = re.match(r"^CASE (\S+) (\S+) (ok|refused|FAILED)", line)
        if c:
            fam, name, st = c.groups()
            d = res["cases"].setdefault(fam, {"ok": 0, "refused": 0, "failed": 0})
            d[st.lower()] += 1
            if st == "FAILED":
                res["failed_cases"].append(line[:300])
        if line.startswith("DRIVER DONE"):
            res["done"] = True
        if "Segmentation fault" in line or "core dumped" in line or line.startswith("Fatal Python error"):
            res["crashed"] = line[:200]
    flush()
    return res


# Tools that instrument only jax_na kernels: every report of theirs is ours, attributed or not.
FILTERED_TOOLS = ("memcheck", "racecheck", "synccheck")


def summarize(logdir: str, tools: list, families: list) -> int:
    rows, problems = [], []
    for tool in tools:
        r = parse_log(os.path.join(logdir, f"{tool}.log"))
        timed_out = os.path.exists(os.path.join(logdir, f"{tool}.timeout"))
        per_fam = {f: 0 for f in families}
        other = warn = 0
        for fam, sev, first in r["reports"]:
            if sev == "warning":
                warn += 1
            elif fam is not None:
                per_fam[fam] = per_fam.get(fam, 0) + 1  # also a family not asked for: ours
            else:
                other += 1
        ours = sum(per_fam.values())
        if r["summary_errors"] is not None and r["summary_errors"] > ours + other:
            other += r["summary_errors"] - ours - other  # counted by the tool, not parsed here
        status = "ok"
        if timed_out:
            status = "TIMEOUT"
        elif not r["done"]:
            status = "INCOMPLETE" + (f" ({r['crashed']})" if r["crashed"] else "")
        elif r["summary_errors"] is None:
            status = "NO SUMMARY"
        if r["failed_cases"]:
            status = f"{len(r['failed_cases'])} case(s) FAILED"
        unattributed_is_ours = tool in FILTERED_TOOLS and os.environ.get("SANITIZE_FILTER", "1") != "0"
        if status == "ok" and (ours or (other and unattributed_is_ours)):
            status = "ERRORS"
        if ours or status != "ok" or (other and unattributed_is_ours):
            problems.append(tool)
        cases = {f: r["cases"].get(f, {"ok": 0, "refused": 0, "failed": 0}) for f in per_fam}
        rows.append((tool, per_fam, other, warn, status, cases, unattributed_is_ours))
        for fam, sev, first in r["reports"][:12]:
            print(f"  [{tool}] {fam or 'unattributed'} {sev}: {first}")
        for line in r["failed_cases"][:12]:
            print(f"  [{tool}] {line}")
    fams = list(dict.fromkeys(families + [f for row in rows for f in row[1]]))
    w = max([len(f) for f in fams] + [12])
    print()
    print("compute-sanitizer: errors in jax_na kernels, per tool and family "
          "(in brackets: cases ok/refused/failed)")
    print(f"{'tool':10s} " + " ".join(f"{f:>{w}s}" for f in fams) + f" {'unattrib.':>10s} {'warn':>5s}  status")
    for tool, per_fam, other, warn, status, cases, strict in rows:
        cells = []
        for f in fams:
            c = cases.get(f, {"ok": 0, "refused": 0, "failed": 0})
            cells.append(f"{per_fam.get(f, 0)} ({c['ok']}/{c['refused']}/{c['failed']})".rjust(w))
        oth = f"{other}{'' if strict else '*'}"
        print(f"{tool:10s} " + " ".join(cells) + f" {oth:>10s} {warn:5d}  {status}")
    print("unattrib.: reports naming no jax_na kernel; they count as errors for the tools that check "
          "only jax_na kernels (memcheck, racecheck, synccheck), *not for initcheck (XLA's kernels); "
          "warn: racecheck warnings, not counted")
    total = sum(sum(r[1].values()) + (r[2] if r[6] else 0) for r in rows)
    print(f"RESULT: {'PASS' if not problems else 'FAIL'}: {total} error(s) in jax_na kernels"
          + (f"; problems in: {', '.join(problems)}" if problems else ""))
    return 1 if problems else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--families", action="store_true", help="print the CUDA families to check")
    mode.add_argument("--list", action="store_true", help="print the cases of --tool")
    mode.add_argument("--run", action="store_true", help="run the cases of --tool")
    mode.add_argument("--summarize", metavar="LOGDIR", help="parse LOGDIR/<tool>.log, print the table")
    ap.add_argument("--tool", choices=TOOLS, default="memcheck")
    ap.add_argument("--tools", default=",".join(TOOLS), help="for --summarize")
    ap.add_argument("--family", action="append", help="family to run (repeatable; default: all)")
    ap.add_argument("--only", help="regex on case names")
    ap.add_argument("--quick", action="store_true", help="the quick subset of cases (racecheck: unchanged)")
    ap.add_argument("--built-only", action="store_true", help="--families without a GPU: the built ones")
    a = ap.parse_args(argv)
    if a.families:
        print(" ".join(cuda_families(a.built_only)))
        return 0
    if a.list:
        for c in cases_for(a.tool, a.quick):
            if a.only is None or re.search(a.only, c.name):
                print((f"  [{c.only} only] " if c.only else "  ") + c.describe())
        return 0
    if a.summarize:
        fams = a.family or []
        return summarize(a.summarize, [t for t in a.tools.split(",") if t], fams)
    families = a.family or cuda_families()
    if not families:
        print("DRIVER DONE ok=0 refused=0 failed=0 (no CUDA family available here)", flush=True)
        return 1
    return run(a.tool, families, a.only, a.quick)


if __name__ == "__main__":
    sys.exit(main())
