"""CUDA kernel families against backend="reference", through the public API, on a GPU.

Every test is marked `gpu` (conftest.py skips them, with a reason, where JAX sees no GPU; on a
GPU machine run scripts/gpu_check.sh). Each family that jax_na.available_families() reports is
checked on a table of named feature cases (1-D/2-D/3-D, dilation, stride, per-dim causal, even
kernels, kernel = extent, GQA/MQA, additional KV, extents that are not multiples of any tile,
kernels larger than one chunk, head dims 32/64/128/256 and 40) x dtypes: out, lse and the gradients
of <out, dout> + <lse, dlse> with respect to q, k, v (and the additional k, v), each against
the reference on the same inputs (fresh randn per case, never zeros):
  - Frobenius relative error within tests/problems.TOL (float32 1e-5: the reference runs at
    Precision.HIGHEST, no TF32; float16 5e-3; bfloat16 3e-2);
  - every element finite and within ELEM_TOL x max|reference| (catches a single unwritten or
    wrong element that a norm would average away).
Families that cannot run a (dtype, head_dim) fail cleanly ("does not support") and those cases
are skipped with that reason; cuda-gemm must run every dtype at head_dim 32, 64 and 128.
"""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_na
from jax_na import _native

from . import problems as P

pytestmark = pytest.mark.gpu

F32, F16, BF16 = P.F32, P.F16, P.BF16
ALL = (F32, F16, BF16)
TENSOR_CORE_HEAD_DIMS = (32, 64, 128)

# Elementwise bound, relative to the largest |reference| element of the same quantity.
ELEM_TOL = {jnp.dtype(F32): 1e-4, jnp.dtype(F16): 1.5e-2, jnp.dtype(BF16): 8e-2}

C = P.problem
# name: (problem, dtypes). Extents are odd / not multiples of the tiles on purpose.
CASES = {
    "1d-basic": (C((37,), 7, head_dim=32), ALL),
    "1d-dilation-stride": (C((41,), 5, stride=3, dilation=2, head_dim=64), ALL),
    "1d-causal-stride": (C((50,), 9, stride=2, is_causal=True, head_dim=32), ALL),
    "1d-even-k-d128": (C((30,), 6, stride=4, head_dim=128), (F32, BF16)),
    "1d-kernel-eq-extent": (C((16,), 16, head_dim=32, scale=0.7), (F32, BF16)),
    "1d-large-k": (C((300,), 129, dilation=2, head_dim=64), (F32, BF16)),
    "1d-mqa-extra-kv": (C((33,), 5, heads=4, heads_kv=1, n_extra=5, head_dim=32), ALL),
    "1d-causal-large-k-d128": (C((200,), 150, is_causal=True, head_dim=128), (BF16,)),
    "1d-head-dim-40": (C((29,), 7, head_dim=40), (F32, BF16)),
    # More query tiles than an H100 has SMs: cuda-hopper's persistent CTAs take several each.
    "1d-many-tiles-d128": (C((4000,), 65, stride=2, is_causal=True, heads=4, head_dim=128, batch=2),
                           (BF16,)),
    # Non-causal 1-D: the persistent CTAs take their tiles round robin (192 tiles, no counter).
    "1d-many-tiles-round-robin": (C((3000,), 97, dilation=2, heads=4, heads_kv=2, head_dim=64, batch=2),
                                  (F16, BF16)),
    "2d-basic": (C((13, 17), (5, 7), head_dim=32), ALL),
    "2d-dilation-stride": (C((19, 22), (3, 5), stride=(2, 3), dilation=(3, 2), head_dim=64), ALL),
    "2d-causal-mixed": (C((15, 18), (4, 5), stride=(1, 2), is_causal=(True, False), head_dim=32), ALL),
    "2d-causal-both-d128": (C((12, 20), (3, 7), dilation=(1, 2), is_causal=True, head_dim=128), (F32, BF16)),
    "2d-even-k": (C((14, 11), (4, 6), stride=(3, 5), head_dim=64), (F32, F16)),
    "2d-kernel-eq-extent": (C((9, 9), 9, head_dim=32), (F32, BF16)),
    "2d-gqa-extra-kv": (C((10, 12), 3, heads=6, heads_kv=2, n_extra=4, head_dim=64), ALL),
    "2d-large-k": (C((40, 40), 17, stride=(1, 4), head_dim=32, batch=2), (F32, BF16)),
    "2d-head-dim-40": (C((11, 13), 5, dilation=(2, 1), head_dim=40), (F32, BF16)),
    "2d-v1-like": (C((56, 56), 7, batch=2, heads=2, head_dim=32), (BF16,)),
    "2d-many-tiles-dilation-gqa": (C((64, 72), 9, dilation=(2, 3), heads=8, heads_kv=4, head_dim=64),
                                   (F16, BF16)),
    # cuda-hopper's forward takes 128-key tiles here (instantiate.h wide_kv_tiles): masked ones
    # (windows at least 4 tiles across), and 3-D boxes the strided windows fill exactly.
    "2d-wide-tiles-large-k": (C((72, 96), (40, 70), head_dim=64), (F16, BF16)),
    # bfloat16 at head_dim 128 masks those tiles by the tensor core (cuda/hopper kBias: -2^126
    # added by one MMA per cut dim); float16 builds mask words.
    "2d-wide-tiles-d128-causal-gqa": (C((72, 96), (40, 70), stride=(2, 3), is_causal=(True, False),
                                        heads=4, heads_kv=2, head_dim=128), (F16, BF16)),
    "2d-wide-tiles-d128-dilation": (C((144, 96), (40, 70), stride=(2, 1), dilation=(2, 1),
                                      is_causal=(True, False), head_dim=128), (BF16,)),
    "3d-wide-tiles-blocked": (C((8, 16, 24), (4, 8, 8), stride=(4, 8, 8), head_dim=128), (BF16,)),
    "3d-basic": (C((6, 7, 9), 3, head_dim=32), ALL),
    "3d-mixed": (C((7, 8, 10), (2, 3, 4), stride=(1, 2, 3), dilation=(2, 1, 2),
                   is_causal=(False, True, False), head_dim=64), ALL),
    "3d-causal-all": (C((5, 6, 8), (2, 3, 3), stride=(2, 1, 3), is_causal=True, head_dim=32), (F32, BF16)),
    "3d-kernel-eq-extent-gqa-d128": (C((4, 5, 6), (4, 5, 6), heads=4, heads_kv=2, head_dim=128), (F32, BF16)),
    "3d-mqa-extra-kv": (C((5, 6, 7), 3, dilation=(1, 2, 2), heads=3, heads_kv=1, n_extra=3, head_dim=32),
                        (F16, BF16)),
    "3d-large-k": (C((12, 16, 16), (5, 7, 9), head_dim=64), (BF16,)),
    "3d-head-dim-40": (C((4, 6, 8), 3, head_dim=40), (F32,)),
    # Head dim 256: cuda-hopper (forward: 64-key tiles, Q single-buffered; backward: two
    # warpgroups, one per half of the accumulated columns), by TMA, and by cp.async for
    # dilation > 8 and for 3-D boxes that would cross batch elements; other families route to
    # cuda-naive.
    "1d-head-dim-256-gqa": (C((300,), 33, dilation=2, heads=4, heads_kv=2, head_dim=256), (F16, BF16)),
    "1d-head-dim-256-dilation-9": (C((120,), 5, dilation=9, is_causal=True, head_dim=256), (BF16,)),
    "2d-head-dim-256-causal": (C((20, 24), (5, 7), stride=(1, 2), is_causal=(True, False), head_dim=256),
                               (BF16,)),
    "3d-head-dim-256-batch": (C((6, 8, 10), 3, dilation=(1, 2, 1), batch=2, head_dim=256), (BF16,)),
}


def _family_params():
    built = jax_na.available_families()
    return [pytest.param(f, id=f, marks=pytest.mark.skipif(
        f not in built, reason=f"{f} not built into this jax_na (available_families() = {built})"))
        for f in _native.CUDA_FAMILIES]


FAMILIES = _family_params()


def _case_params():
    return [pytest.param(name, dt, id=f"{name}-{jnp.dtype(dt).name}")
            for name, (_, dts) in CASES.items() for dt in dts]


@functools.lru_cache(maxsize=None)
def _inputs(name: str):
    p = CASES[name][0]
    return P.make_inputs(p, np.random.default_rng(zlib.crc32(name.encode())))


@functools.lru_cache(maxsize=None)
def _reference(name: str, dtype_name: str):
    return P.run(CASES[name][0], _inputs(name), "reference", jnp.dtype(dtype_name))


def _unsupported(err: Exception) -> bool:
    msg = str(err).lower()
    return "not support" in msg or "notsupported" in msg


def _run_family(family, p, x, dtype):
    """P.run through `family`; skips when the family cleanly refuses the (dtype, head_dim)."""
    # naive and hopper (which routes what its kernels lack to fused / naive) run everything.
    must_run = family in ("cuda-naive", "cuda-hopper") or (
        family == "cuda-gemm" and p.head_dim in TENSOR_CORE_HEAD_DIMS)
    try:
        return P.run(p, x, family, dtype)
    except Exception as e:  # noqa: BLE001 - XlaRuntimeError or ValueError, by message
        if must_run or not _unsupported(e):
            raise
        pytest.skip(f"{family} does not support dtype={jnp.dtype(dtype).name} head_dim={p.head_dim}: "
                    f"{str(e).splitlines()[0][:200]}")


def _check(got: P.Result, want: P.Result, dtype, what: str):
    tol = P.TOL[jnp.dtype(dtype)]
    elem = ELEM_TOL[jnp.dtype(dtype)]
    bad = []
    for name, w in want.named().items():
        g = got.named()[name]
        assert g.shape == w.shape, (what, name, g.shape, w.shape)
        if not np.all(np.isfinite(g)):
            bad.append(f"{name}: {int(np.sum(~np.isfinite(g)))} non-finite elements")
            continue
        e = P.rel_err(g, w)
        scale = max(float(np.max(np.abs(w))), 1e-30)
        diff = np.abs(g - w)
        worst = float(np.max(diff)) / scale
        if not (e <= tol and worst <= elem):
            idx = np.unravel_index(int(np.argmax(diff)), diff.shape)
            bad.append(f"{name}: rel {e:.3g} (tol {tol:g}), max elem {worst:.3g} x max|ref| "
                       f"(tol {elem:g}) at {idx}: got {g[idx]:.6g} want {w[idx]:.6g}")
    assert not bad, f"{what}:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("name,dtype", _case_params())
@pytest.mark.parametrize("family", FAMILIES)
def test_family_vs_reference(family, name, dtype):
    p = CASES[name][0]
    got = _run_family(family, p, _inputs(name), dtype)
    want = _reference(name, jnp.dtype(dtype).name)
    _check(got, want, dtype, f"{family} {name} {jnp.dtype(dtype).name} [{p.short()}]")


@pytest.mark.parametrize("family", FAMILIES)
def test_backward_is_deterministic(family):
    """Two runs of the same gradients are bitwise equal (no atomics in the kernels)."""
    name = "2d-gqa-extra-kv"
    p, x = CASES[name][0], _inputs(name)
    a = _run_family(family, p, x, BF16)
    b = _run_family(family, p, x, BF16)
    for (n, u), v in zip(a.named().items(), b.named().values()):
        assert np.array_equal(u, v), f"{family}: {n} differs between two identical runs"


@pytest.mark.parametrize("family", FAMILIES)
def test_vmap_folds_into_batch(family):
    """vmap over a leading axis (folded into batch by the primitives) equals the loop."""
    rng = np.random.default_rng(7)
    q, k, v = (jnp.asarray(rng.standard_normal((3, 2, 9, 10, 2, 32)), BF16) for _ in range(3))

    def f(q, k, v):
        return jax_na.na2d(q, k, v, 3, return_lse=True, backend=family)

    try:
        out, lse = jax.jit(jax.vmap(f))(q, k, v)
    except Exception as e:  # noqa: BLE001
        if family == "cuda-fused" and _unsupported(e):
            pytest.skip(f"{family}: {str(e).splitlines()[0][:200]}")
        raise
    for i in range(3):
        o_i, l_i = jax.jit(f)(q[i], k[i], v[i])
        np.testing.assert_array_equal(np.asarray(out[i].astype(F32)), np.asarray(o_i.astype(F32)))
        np.testing.assert_array_equal(np.asarray(lse[i]), np.asarray(l_i))


def test_gemm_other_head_dims_fail_cleanly_or_route():
    """cuda-gemm at head_dim 40: either routed elsewhere (then correct) or a clean error."""
    if "cuda-gemm" not in jax_na.available_families():
        pytest.skip("cuda-gemm not built")
    name = "1d-head-dim-40"
    p, x = CASES[name][0], _inputs(name)
    try:
        got = P.run(p, x, "cuda-gemm", F32)
    except Exception as e:  # noqa: BLE001
        assert _unsupported(e), f"unexpected error: {e}"
        return
    _check(got, _reference(name, "float32"), F32, "cuda-gemm head_dim 40")
