"""Property tests (hypothesis): random valid problems in 1-3 dims, every backend against the
reference and the reference against the float64 oracle. The "ci" profile in conftest.py fixes
the examples (derandomized, no database) so CI is reproducible."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jax_na import reference

from . import oracle
from . import problems as P


@st.composite
def dim_config(draw, max_extent):
    """(extent, kernel, stride, dilation, causal) of one dimension, satisfying the rules."""
    kernel = draw(st.integers(2, min(6, max_extent)))
    dilation = draw(st.integers(1, max(1, min(3, max_extent // kernel))))
    extent = draw(st.integers(kernel * dilation, max(kernel * dilation, max_extent)))
    stride = draw(st.integers(1, kernel))
    causal = draw(st.booleans())
    return extent, kernel, stride, dilation, causal


@st.composite
def problems(draw):
    rank = draw(st.integers(1, 3))
    dims = [draw(dim_config({1: 20, 2: 9, 3: 5}[rank])) for _ in range(rank)]
    heads_kv = draw(st.sampled_from([1, 2]))
    return P.Problem(
        spatial=tuple(d[0] for d in dims), kernel_size=tuple(d[1] for d in dims), stride=tuple(d[2] for d in dims),
        dilation=tuple(d[3] for d in dims), is_causal=tuple(d[4] for d in dims),
        batch=draw(st.integers(1, 2)), heads=heads_kv * draw(st.sampled_from([1, 2, 3])), heads_kv=heads_kv,
        head_dim=draw(st.sampled_from([4, 8, 16])), n_extra=draw(st.sampled_from([0, 0, 1, 3])),
        scale=draw(st.one_of(st.none(), st.floats(0.05, 2.0))),
    )


@settings(max_examples=300)
@given(dim_config(40))
def test_window_math_matches_oracle(cfg):
    """The reference's per-dimension window table equals the oracle's dense mask; non-causal
    queries have exactly k neighbours, causal ones 1..k."""
    extent, kernel, stride, dilation, causal = cfg
    coords, valid = reference.neighbor_table(extent, kernel, stride, dilation, causal)
    got = np.zeros((extent, extent), bool)
    for x in range(extent):
        got[x, coords[x][valid[x]]] = True
    want = oracle.mask_1d(extent, kernel, stride, dilation, causal)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(valid.sum(axis=1), want.sum(axis=1))  # no duplicate valid candidates
    counts = want.sum(axis=1)
    assert np.all(counts == kernel) if not causal else np.all((counts >= 1) & (counts <= kernel))


@given(problems(), st.integers(0, 2**32 - 1))
def test_reference_matches_oracle(p, seed):
    x = P.make_inputs(p, np.random.default_rng(seed))
    P.assert_close(P.run(p, x, "reference"), P.run_oracle(p, x), P.ORACLE_TOL, p.short())


@pytest.mark.parametrize("backend", P.api_backends())
@settings(max_examples=6)
@given(p=problems(), seed=st.integers(0, 2**32 - 1))
def test_backend_matches_reference(backend, p, seed):
    x = P.make_inputs(p, np.random.default_rng(seed))
    got = P.run(p, x, backend)
    tol = P.TOL[np.dtype(np.float32)]
    P.assert_close(got, P.run(p, x, "reference"), tol, f"backend={backend!r} vs reference: {p.short()}")
    P.assert_close(got, P.run_oracle(p, x), tol, f"backend={backend!r} vs oracle: {p.short()}")
