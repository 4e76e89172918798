"""Run-to-run spread of each kernel family's forward and backward, for the record.

    python scripts/determinism.py [--runs 5] [--families cuda-fused,...] [--json out.json]

For every family (default: every cuda-* family of jax_na.available_families(), else the native
CPU family) and a few problems with many CTAs, GQA and large windows, runs the same jitted
forward + backward (out, lse, dq, dk, dv of <out, dout> + <lse, dlse>) --runs times on the same
inputs and prints, per quantity, the largest |run_i - run_0| and whether every run is bitwise
identical to the first. A deterministic family prints 0 and "yes" everywhere; a family that
accumulates with atomics would show its spread here (tests/test_gpu_hardening.py asserts
bitwise identity for every family not listed in its NONDETERMINISTIC table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_na

NAMES = ("out", "lse", "dq", "dk", "dv")
# name: (spatial, kwargs, batch, heads, heads_kv, head_dim, dtype)
CASES = {
    "2d-gqa-k7x9-bf16": ((40, 48), dict(kernel_size=(7, 9), dilation=(1, 2), is_causal=(False, True)),
                         2, 8, 2, 64, jnp.bfloat16),
    "1d-mqa-k129-d128-f16": ((700,), dict(kernel_size=129, stride=4), 2, 4, 1, 128, jnp.float16),
    "3d-gqa-f32": ((6, 10, 12), dict(kernel_size=(3, 5, 5), dilation=(2, 1, 1)), 1, 4, 2, 32, jnp.float32),
    "2d-v1-like-bf16": ((56, 56), dict(kernel_size=7), 16, 2, 2, 32, jnp.bfloat16),
}


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def measure(family: str, case: str, runs: int) -> dict:
    spatial, kw, b, h, hkv, d, dt = CASES[case]
    rng = np.random.default_rng(0)
    put = lambda shape, t=dt: jax.device_put(rng.standard_normal(shape).astype(jnp.dtype(t)))  # noqa: E731
    q, k, v = put((b, *spatial, h, d)), put((b, *spatial, hkv, d)), put((b, *spatial, hkv, d))
    dout, dlse = put((b, *spatial, h, d)), put((b, *spatial, h), jnp.float32)

    def fwd_bwd(q, k, v, dout, dlse):
        f = lambda q, k, v: jax_na.neighborhood_attention(q, k, v, **kw, return_lse=True, backend=family)  # noqa: E731
        (out, lse), vjp = jax.vjp(f, q, k, v)
        return (out, lse) + tuple(vjp((dout, dlse)))

    fn = jax.jit(fwd_bwd)
    results = []
    t0 = time.time()
    for _ in range(runs):
        results.append([np.asarray(x) for x in jax.block_until_ready(fn(q, k, v, dout, dlse))])
    row = {"family": family, "case": case, "runs": runs, "seconds": round(time.time() - t0, 3)}
    for i, n in enumerate(NAMES):
        first = results[0][i]
        row[n] = max(float(np.max(np.abs(r[i].astype(np.float64) - first.astype(np.float64)))) for r in results[1:])
        row[n + "_bitwise"] = all(np.array_equal(_bits(r[i]), _bits(first)) for r in results[1:])
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--families", help="comma-separated (default: every cuda-* family here, else cpu)")
    ap.add_argument("--cases", help="comma-separated subset of " + ",".join(CASES))
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args(argv)
    avail = jax_na.available_families()
    fams = a.families.split(",") if a.families else ([f for f in avail if f.startswith("cuda-")] or
                                                     [f for f in avail if f == "cpu"])
    cases = a.cases.split(",") if a.cases else list(CASES)
    print(f"jax {jax.__version__}, devices {jax.devices()}, families {fams}, {a.runs} runs each")
    print(f"{'family':12s} {'case':22s} " + " ".join(f"{n:>12s}" for n in NAMES) + "  bitwise identical")
    rows, nondet = [], []
    for fam in fams:
        for case in cases:
            try:
                row = measure(fam, case, a.runs)
            except Exception as e:  # noqa: BLE001 - a family may refuse a problem
                print(f"{fam:12s} {case:22s} skipped: {' '.join(str(e).split())[:150]}")
                continue
            rows.append(row)
            same = all(row[n + "_bitwise"] for n in NAMES)
            if not same:
                nondet.append(f"{fam}/{case}")
            print(f"{fam:12s} {case:22s} " + " ".join(f"{row[n]:12.3g}" for n in NAMES) +
                  f"  {'yes' if same else 'NO'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print("max |run_i - run_0| per quantity over the runs; "
          + ("every family bitwise deterministic" if not nondet else "not bitwise identical: " + ", ".join(nondet)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
