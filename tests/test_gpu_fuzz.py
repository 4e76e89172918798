"""GPU differential fuzzing (issue 8, item 1, the GPU budget) and non-finite semantics on the CUDA
families (item 4).

- Fuzz: hypothesis draws random valid problems sized for the tensor-core tiles (extents that are
  not multiples of any tile, kernel = extent and dilation * kernel = extent reachable, strides,
  per-dim causal, GQA ratios, additional KV, head_dim 32/64/128, float32/float16/bfloat16) and
  compares every CUDA family jax_na.available_families() reports with backend="reference": out,
  lse and the three gradients, with tests/test_gpu.py's tolerances. JAX_NA_GPU_FUZZ_EXAMPLES
  sets the examples per family (default 6, derandomized like the CI profile; e.g. 60 for a long
  run on a GPU machine; the non-finite fuzz below runs a third as many, at least 2).
- Non-finite: a NaN (or a +-Inf value) in one q/k/v token reaches exactly the outputs and
  gradients the semantics name (the dense-mask ground truth of test_hardening.py), on every CUDA
  family: fixed cases, and the fuzz problems without additional keys/values. cuda-naive computes each (query, key) pair alone. The tiled families (cuda-gemm,
  cuda-fused, cuda-hopper) multiply whole tiles, where a masked pair contributes 0 * x, so a
  non-finite x also reaches other rows of its tile; their stores raise a flag and one repair
  launch recomputes every non-finite chunk pair by pair (cuda/repair/repair.h). This test is
  what shows the result exact. Cases: bf16 at head_dim 64 and 128 (cuda-hopper's own forward,
  64- and 128-key tiles) and float32 (cuda-gemm's fp32 tiles).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import problems as P
from .test_gpu import ELEM_TOL, FAMILIES, _check, _run_family
from .test_hardening import _expected_nonfinite, _mask_mismatch, _poison, _run_grads

pytestmark = pytest.mark.gpu

EXAMPLES = int(os.environ.get("JAX_NA_GPU_FUZZ_EXAMPLES", "6"))
# Each non-finite example compiles the family and the reference anew: a third as many.
NONFINITE_EXAMPLES = max(2, EXAMPLES // 3)
MAX_EXTENT = {1: 300, 2: 40, 3: 14}


@st.composite
def dim(draw, max_extent):
    """(extent, kernel, stride, dilation, causal) of one dimension, satisfying the rules."""
    kernel = draw(st.integers(2, min(24, max_extent)))
    dilation = draw(st.integers(1, max(1, min(4, max_extent // kernel))))
    lo = kernel * dilation
    extent = draw(st.one_of(st.just(lo), st.integers(lo, max(lo, max_extent))))  # k * d = L often
    return extent, kernel, draw(st.integers(1, kernel)), dilation, draw(st.booleans())


@st.composite
def problems(draw):
    rank = draw(st.integers(1, 3))
    dims = [draw(dim(MAX_EXTENT[rank])) for _ in range(rank)]
    heads_kv = draw(st.sampled_from([1, 2]))
    return P.Problem(
        spatial=tuple(d[0] for d in dims), kernel_size=tuple(d[1] for d in dims),
        stride=tuple(d[2] for d in dims), dilation=tuple(d[3] for d in dims),
        is_causal=tuple(d[4] for d in dims), batch=draw(st.integers(1, 2)),
        heads=heads_kv * draw(st.sampled_from([1, 2, 4])), heads_kv=heads_kv,
        head_dim=draw(st.sampled_from([32, 64, 128])), n_extra=draw(st.sampled_from([0, 0, 0, 2])),
        scale=draw(st.one_of(st.none(), st.floats(0.05, 1.0))))


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(p=problems(), dtype=st.sampled_from([P.F32, P.F16, P.BF16]), seed=st.integers(0, 2**32 - 1))
def test_fuzz_family_vs_reference(family, p, dtype, seed):
    x = P.make_inputs(p, np.random.default_rng(seed))
    got = _run_family(family, p, x, dtype)
    want = P.run(p, x, "reference", dtype)
    _check(got, want, dtype, f"{family} {jnp.dtype(dtype).name} [{p.short()}]")


NONFINITE_CASES = {  # name: (problem, dtype)
    "1d-causal-stride": (P.problem((150,), 17, stride=2, is_causal=True, heads=4, heads_kv=2,
                                   head_dim=64), P.BF16),
    "1d-d128": (P.problem((300,), 33, heads=2, heads_kv=1, head_dim=128), P.BF16),
    "2d-dil": (P.problem((19, 23), (5, 7), dilation=(2, 1), heads=2, heads_kv=1, head_dim=64), P.BF16),
    "2d-f32": (P.problem((11, 13), 5, stride=(1, 2), heads=2, heads_kv=2, head_dim=32), P.F32),
    # cuda-hopper's RD backward (delta formed in its dQ kernel: cuda/hopper/rd_rule.h)
    "2d-rd": (P.problem((13, 11), 5, heads=2, heads_kv=1, head_dim=32), P.BF16),
    "3d": (P.problem((6, 7, 9), 3, is_causal=(False, True, False), heads=2, heads_kv=2,
                     head_dim=64), P.BF16),
}


def _nonfinite_problems(family, p, dtype, x, which, idx):
    """What differs from the semantics when q/k/v[idx] is non-finite: the non-finite masks of
    out, lse and the gradients, and the finite entries (repaired ones included) against the
    reference."""
    got = _run_grads(p, x, family, dtype)
    ref = _run_grads(p, x, "reference", dtype)
    problems_ = []
    for what, w in _expected_nonfinite(p, which, idx).items():
        where = f"{what} (poisoned {which}{idx})"
        bad = _mask_mismatch(got[what], np.where(w, np.nan, 0.0), where)
        if bad:
            problems_.append(bad)
            continue
        g, r = got[what][~w], ref[what][~w]
        worst = float(np.max(np.abs(g - r), initial=0.0)) / max(float(np.max(np.abs(r), initial=0.0)), 1e-30)
        if not (P.rel_err(g, r) <= P.TOL[jnp.dtype(dtype)] and worst <= ELEM_TOL[jnp.dtype(dtype)]):
            problems_.append(f"{where}: finite entries differ from the reference, "
                             f"rel {P.rel_err(g, r):.3g}, max elem {worst:.3g} x max|ref|")
    return problems_


POISONS = [("q", np.nan), ("k", np.nan), ("v", np.nan), ("v", np.inf)]


@pytest.mark.parametrize("which,value", POISONS, ids=["q-nan", "k-nan", "v-nan", "v-inf"])
@pytest.mark.parametrize("name", list(NONFINITE_CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_nonfinite_inputs(family, name, which, value):
    p, dtype = NONFINITE_CASES[name]
    base = P.make_inputs(p, np.random.default_rng(P.stable_seed("gpu-nonfinite", name)))
    problems_ = []
    for seed in range(2):
        x, idx = _poison(p, base, which, value, P.stable_seed(name, which, seed))
        problems_ += _nonfinite_problems(family, p, dtype, x, which, idx)
    assert not problems_, "\n".join(problems_)


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=NONFINITE_EXAMPLES, deadline=None, derandomize=True, database=None,
          print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(p=problems().filter(lambda p: p.n_extra == 0), dtype=st.sampled_from([P.F32, P.F16, P.BF16]),
       poison=st.sampled_from(POISONS), seed=st.integers(0, 2**32 - 1))
def test_fuzz_nonfinite_inputs(family, p, dtype, poison, seed):
    """test_nonfinite_inputs on the fuzz problems (no additional keys/values: the ground truth
    covers the neighbourhood only)."""
    which, value = poison
    x, idx = _poison(p, P.make_inputs(p, np.random.default_rng(seed)), which, value, seed)
    problems_ = _nonfinite_problems(family, p, dtype, x, which, idx)
    assert not problems_, f"{family} {jnp.dtype(dtype).name} [{p.short()}]:\n" + "\n".join(problems_)
