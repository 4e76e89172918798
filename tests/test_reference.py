"""jax_na.reference against the independent float64 dense-mask oracle (tests/oracle.py).

Two levels: the window math alone (numpy, exhaustive over small 1-D configurations, and the
window facts the semantics state), and the whole function with its gradients (backend="reference"
over named feature configurations and seeded random ones).
"""

import itertools

import jax
import numpy as np
import pytest

import jax_na
from jax_na import reference
from jax_na.params import NAParams

from . import oracle
from . import problems as P


def _all_1d_configs(max_extent):
    for extent in range(2, max_extent + 1):
        for kernel in range(2, extent + 1):
            for dilation in range(1, extent // kernel + 1):
                for stride in range(1, kernel + 1):
                    for causal in (False, True):
                        yield extent, kernel, stride, dilation, causal


CONFIGS_1D = list(_all_1d_configs(13))


def _reference_mask_1d(extent, kernel, stride, dilation, causal):
    """The reference's neighbour table as a dense [L, L] mask; also checks its valid candidates
    are distinct (a duplicate would be counted twice by the softmax)."""
    coords, valid = reference.neighbor_table(extent, kernel, stride, dilation, causal)
    assert coords.shape == (extent, kernel) and valid.shape == (extent, kernel)
    m = np.zeros((extent, extent), bool)
    for x in range(extent):
        picked = coords[x][valid[x]]
        assert len(set(picked.tolist())) == len(picked), f"duplicate neighbours of query {x}: {coords[x]}"
        assert np.all((picked >= 0) & (picked < extent))
        m[x, picked] = True
    return m


# --- the oracle against the plain-words statement and the window facts ------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_oracle_matches_plain_words_for_unit_stride_and_dilation(causal):
    for extent in range(2, 16):
        for kernel in range(2, extent + 1):
            np.testing.assert_array_equal(
                oracle.mask_1d(extent, kernel, 1, 1, causal), oracle.simple_mask_1d(extent, kernel, causal),
                err_msg=f"L={extent} k={kernel} causal={causal}")


def test_window_facts_1d():
    """Exhaustively over small 1-D configurations: non-causal queries have exactly k neighbours,
    causal ones between 1 and k; every query is its own neighbour; neighbours share the query's
    dilation group; a dilation group behaves as the undilated problem of extent Lg."""
    for extent, kernel, stride, dilation, causal in CONFIGS_1D:
        m = oracle.mask_1d(extent, kernel, stride, dilation, causal)
        what = f"L={extent} k={kernel} s={stride} d={dilation} causal={causal}"
        counts = m.sum(axis=1)
        if causal:
            assert np.all((counts >= 1) & (counts <= kernel)), what
        else:
            assert np.all(counts == kernel), what
        assert np.all(np.diag(m)), what
        x = np.arange(extent)
        assert not np.any(m & (x[:, None] % dilation != x[None, :] % dilation)), what
        for g in range(dilation):
            lg = len(range(g, extent, dilation))
            np.testing.assert_array_equal(m[g::dilation, g::dilation], oracle.mask_1d(lg, kernel, stride, 1, causal),
                                          err_msg=what)


def test_stride_groups_share_windows():
    """Non-causal: the queries of one stride group have one neighbour set. Causal: each sees the
    group leader's window cut at itself."""
    for extent, kernel, stride, dilation, causal in CONFIGS_1D:
        if stride == 1:
            continue
        m = oracle.mask_1d(extent, kernel, stride, dilation, causal)
        for g in range(dilation):
            sub = m[g::dilation, g::dilation]
            lg = sub.shape[0]
            for start in range(0, lg, stride):
                members = range(start, min(start + stride, lg))
                leader = min(start + stride - 1, lg - 1)
                for p in members:
                    if causal:
                        want = sub[leader].copy()
                        want[p + 1:] = False
                        np.testing.assert_array_equal(sub[p], want)
                    else:
                        np.testing.assert_array_equal(sub[p], sub[start])


def test_dense_mask_is_product_of_dims():
    spatial, kernel, stride, dilation, causal = (5, 7), (3, 2), (2, 1), (1, 3), (False, True)
    m = oracle.dense_mask(spatial, kernel, stride, dilation, causal)
    m0, m1 = (oracle.mask_1d(spatial[i], kernel[i], stride[i], dilation[i], causal[i]) for i in range(2))
    for (a0, a1), (b0, b1) in itertools.product(itertools.product(range(5), range(7)), repeat=2):
        assert m[a0 * 7 + a1, b0 * 7 + b1] == (m0[a0, b0] and m1[a1, b1])
    counts = m.sum(axis=1)
    assert counts.max() <= 3 * 2 and counts.min() >= 1


# --- the reference's window math against the oracle ------------------------------------------

def test_reference_neighbor_table_matches_oracle_exhaustive_1d():
    bad = []
    for cfg in CONFIGS_1D:
        if not np.array_equal(_reference_mask_1d(*cfg), oracle.mask_1d(*cfg)):
            bad.append(cfg)
    assert not bad, f"{len(bad)} of {len(CONFIGS_1D)} (L, k, s, d, causal) differ, e.g. {bad[:5]}"


@pytest.mark.parametrize("case", P.feature_params())
def test_reference_neighbor_mask_matches_oracle(case):
    """reference.neighbor_mask + gather coordinates, as a dense [N, N] mask, in 1-3 dims."""
    params = NAParams(case.kernel_size, case.stride, case.dilation, case.is_causal, 1.0)
    n = int(np.prod(case.spatial))
    # gather the flat coordinate of every candidate through the reference's own gather
    flat = np.arange(n, dtype=np.float32).reshape(1, *case.spatial, 1, 1)
    cand = np.asarray(reference.gather_neighbors(flat, params))[0, :, :, 0, 0].astype(int)  # [N, K]
    valid = reference.neighbor_mask(case.spatial, params)
    got = np.zeros((n, n), bool)
    for i in range(n):
        picked = cand[i][valid[i]]
        assert len(set(picked.tolist())) == len(picked)
        got[i, picked] = True
    want = oracle.dense_mask(case.spatial, case.kernel_size, case.stride, case.dilation, case.is_causal)
    np.testing.assert_array_equal(got, want)
    counts = valid.sum(axis=1)
    kk = int(np.prod(case.kernel_size))
    if not any(case.is_causal):
        assert np.all(counts == kk)
    else:
        assert np.all((counts >= 1) & (counts <= kk))


# --- the whole function and its gradients ----------------------------------------------------

FEATURE_NAMES = list(P.FEATURE_CASES)


@pytest.mark.parametrize("index", range(len(FEATURE_NAMES)), ids=FEATURE_NAMES)
def test_reference_matches_oracle_features(index):
    name, p, x = P.feature_cases()[index]
    got = P.reference_feature_results()[index]
    if isinstance(got, Exception):
        raise got
    P.assert_close(got, P.run_oracle(p, x), P.ORACLE_TOL, f"reference vs oracle, {name}: {p.short()}")


def test_reference_matches_oracle_random():
    cases = P.random_cases(seed=1234, n=10)
    bad = P.failures(cases, P.run_many(cases, "reference"), [P.run_oracle(p, x) for p, x in cases], P.ORACLE_TOL)
    assert not bad, "reference vs oracle:\n" + "\n".join(bad)


def test_reference_default_scale_is_inverse_sqrt_head_dim():
    p = P.problem((9,), 3, head_dim=16)
    x = P.make_inputs(p, np.random.default_rng(0))
    default = P.run(p, x, "reference", grads=False)
    explicit = P.run(P.problem((9,), 3, head_dim=16, scale=0.25), x, "reference", grads=False)
    np.testing.assert_array_equal(default.out, explicit.out)
    other = P.run(P.problem((9,), 3, head_dim=16, scale=0.5), x, "reference", grads=False)
    assert P.rel_err(other.out, default.out) > 1e-3


def test_reference_additional_kv_ignores_causality():
    """Every query sees every additional token, causal or not: with huge extra-token scores the
    output is the extra tokens' average for every query, the first one included."""
    p = P.problem((6,), 2, is_causal=True, n_extra=2, heads=1, heads_kv=1, head_dim=4)
    x = P.make_inputs(p, np.random.default_rng(3))
    x.q[:] = 1.0
    x.ak[:] = 30.0  # score 30 * 4 * 0.5 = 60 against O(1) neighbourhood scores
    out = P.run(p, x, "reference", grads=False).out
    want = np.broadcast_to(x.av.mean(axis=1, keepdims=True), out.shape)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_na_fixed_rank_functions_equal_neighborhood_attention():
    rng = np.random.default_rng(5)
    for fn, p in ((jax_na.na1d, P.FEATURE_CASES["1d-stride3"]), (jax_na.na2d, P.FEATURE_CASES["2d-mixed"]),
                  (jax_na.na3d, P.FEATURE_CASES["3d-mixed"])):
        x = P.make_inputs(p, rng)
        q, k, v, _, _ = x.arrays(P.F32)
        got = jax.jit(lambda q, k, v: fn(q, k, v, p.kernel_size, stride=p.stride, dilation=p.dilation,
                                         is_causal=p.is_causal, backend="reference"))(q, k, v)
        want = P.run_oracle(p, x, grads=False).out
        assert P.rel_err(np.asarray(got), want) < P.ORACLE_TOL, fn.__name__
