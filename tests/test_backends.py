"""Backends against the reference and the float64 oracle: output, lse and every gradient.

Backends: None (the public default), "xla-fallback" (the primitives lowered to XLA, forced) and
each native family of this platform ("cpu"; skipped with a reason when not built). The loss
used for gradients is <out, dout> + <lse, dlse> with random dout and dlse, so the lse cotangent
path is exercised; two tests also isolate each cotangent.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jax_na

from . import problems as P

# The sweep: >= 200 seeded random float32 problems per native family (fewer for the paths
# that lower to the same kernels or to XLA), every feature covered, 1e-5 relative.
SWEEP_SEED = 20240601
SWEEP_CASES = {"cpu": 208, None: 16, P.XLA_FALLBACK: 16}

BACKENDS = P.api_backends()


def _sweep_count(backend):
    return SWEEP_CASES["cpu" if backend not in SWEEP_CASES else backend]


def test_sweep_covers_every_feature():
    cases = P.random_cases(SWEEP_SEED, SWEEP_CASES["cpu"])
    seen = set().union(*(P.features_of(p) for p, _ in cases))
    assert P.ALL_FEATURES <= seen, f"sweep misses {sorted(P.ALL_FEATURES - seen)}"
    small = P.random_cases(SWEEP_SEED, min(SWEEP_CASES.values()))
    assert len({p for p, _ in cases}) == len(cases), "sweep repeats a problem"
    assert small[0][0] == cases[0][0]  # the smaller sweeps are prefixes of the big one


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_sweep_f32(backend):
    """Seeded random problems, fresh randn inputs each: out, lse, dq, dk, dv (and the
    additional keys/values' gradients) within 1e-5 relative of the float64 oracle, which the
    reference itself matches to ~3e-7 (test_reference.py)."""
    cases = P.random_cases(SWEEP_SEED, _sweep_count(backend))
    got = P.run_many(cases, backend)
    bad = P.failures(cases, got, [P.run_oracle(p, x) for p, x in cases], P.TOL[jnp.dtype(P.F32)])
    assert not bad, f"{len(bad)} of {len(cases)} cases fail for backend={backend!r}:\n" + "\n".join(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_features_vs_reference_f32(backend):
    cases = [(p, x) for _, p, x in P.feature_cases()]
    got = P.run_many(cases, backend)
    bad = P.failures(cases, got, P.reference_feature_results(), P.TOL[jnp.dtype(P.F32)])
    names = [n for n, _, _ in P.feature_cases()]
    bad = [f"{names[int(line.split()[1])]}: {line}" for line in bad]
    assert not bad, f"backend={backend!r} vs reference:\n" + "\n".join(bad)


@pytest.mark.parametrize("dtype", [P.F16, P.BF16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_low_precision_vs_reference(backend, dtype):
    """float16/bfloat16 inputs: outputs in the input dtype, lse float32 (run() asserts both),
    values and gradients close to the reference on the very same low-precision inputs."""
    cases = _low_precision_cases(jnp.dtype(dtype).name)
    want = _reference_results(jnp.dtype(dtype).name)
    bad = P.failures(cases, P.run_many(cases, backend, dtype), want, P.TOL[jnp.dtype(dtype)])
    assert not bad, f"backend={backend!r} {jnp.dtype(dtype).name} vs reference:\n" + "\n".join(bad)


def _low_precision_cases(dtype_name):
    return P.random_cases(P.stable_seed("low-precision", dtype_name), 6, head_dims=(8, 16, 32, 64))


_REF_CACHE = {}


def _reference_results(dtype_name):
    if dtype_name not in _REF_CACHE:
        cases = _low_precision_cases(dtype_name)
        _REF_CACHE[dtype_name] = P.run_many(cases, "reference", jnp.dtype(dtype_name))
    return _REF_CACHE[dtype_name]


@pytest.mark.parametrize("dtype", [P.F16, P.BF16], ids=["float16", "bfloat16"])
def test_low_precision_reference_vs_oracle(dtype):
    """The low-precision reference is itself close to the float64 oracle on the rounded inputs,
    so the comparisons above are against a meaningful answer."""
    name = jnp.dtype(dtype).name
    cases = _low_precision_cases(name)
    want = [P.run_oracle(p, x.rounded(dtype)) for p, x in cases]
    bad = P.failures(cases, _reference_results(name), want, P.TOL[jnp.dtype(dtype)])
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("which", ["out-only", "lse-only"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_each_cotangent_alone(backend, which):
    """Gradients of <out, dout> alone (dlse = 0) and of <lse, dlse> alone (dout = 0)."""
    cases = P.random_cases(P.stable_seed("cotangent", which), 4)
    for _, x in cases:
        (x.dlse if which == "out-only" else x.dout)[...] = 0.0
    bad = P.failures(cases, P.run_many(cases, backend), [P.run_oracle(p, x) for p, x in cases],
                     P.TOL[jnp.dtype(P.F32)])
    assert not bad, "\n".join(bad)


EDGE_CASES = {
    "head-dim-1": P.problem((9,), 3, head_dim=1),
    "head-dim-3-extra": P.problem((7, 6), 3, head_dim=3, n_extra=2),
    "head-dim-96": P.problem((5, 5), 3, head_dim=96, heads=2, heads_kv=1),
    "head-dim-128-extra": P.problem((10,), 4, stride=2, head_dim=128, heads=1, heads_kv=1, n_extra=1),
    "head-dim-256": P.problem((8,), 3, head_dim=256, heads=1, heads_kv=1),
    "1d-long": P.problem((300,), 7, stride=3, dilation=5, heads=2, heads_kv=1, head_dim=16),
    "1d-long-causal": P.problem((257,), 13, stride=4, dilation=3, is_causal=True, heads=1, heads_kv=1, head_dim=16),
    "2d-large": P.problem((33, 40), (7, 5), stride=(2, 5), dilation=(3, 2), is_causal=(False, True), head_dim=32),
    "3d-large": P.problem((10, 11, 12), (3, 5, 4), stride=(3, 2, 1), dilation=(2, 1, 3), is_causal=(True, False, False),
                          heads=1, heads_kv=1, head_dim=16),
    "gqa-8-to-1-extra": P.problem((9, 9), 3, heads=8, heads_kv=1, head_dim=8, n_extra=3),
    "many-extra-tokens": P.problem((6,), 2, n_extra=200, head_dim=8),
    "batch-5-full-window": P.problem((7,), 7, batch=5, heads=3, heads_kv=3, head_dim=8),
    "tiny-scale": P.problem((9,), 3, scale=1e-4),
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_shapes(backend):
    """Odd and large head dims, long extents (many tiles), large windows, 8:1 GQA, many extra
    tokens: against the float64 oracle."""
    cases = [(p, P.make_inputs(p, np.random.default_rng(P.stable_seed(name)))) for name, p in EDGE_CASES.items()]
    bad = P.failures(cases, P.run_many(cases, backend), [P.run_oracle(p, x) for p, x in cases], P.TOL[jnp.dtype(P.F32)])
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_transposed_inputs(backend):
    """Inputs that are transposes of other arrays inside jit (a layout XLA must materialise
    before a custom call) give the same result."""
    p = P.FEATURE_CASES["2d-mixed"]
    x = P.make_inputs(p, np.random.default_rng(4))
    q, k, v, _, _ = x.arrays(P.F32)
    f = P.attention_fn(p, backend)
    # [B, H, X, Y, D] layout in, transposed to [B, X, Y, H, D] inside the jitted function
    to_bhsd = lambda a: jnp.transpose(a, (0, 3, 1, 2, 4))  # noqa: E731
    g = jax.jit(lambda qt, kt, vt: f(*(jnp.transpose(a, (0, 2, 3, 1, 4)) for a in (qt, kt, vt))))
    with P.backend_context(backend):
        out, lse = g(to_bhsd(q), to_bhsd(k), to_bhsd(v))
    want = P.run_oracle(p, x, grads=False)
    assert P.rel_err(out, want.out) < 1e-5 and P.rel_err(lse, want.lse) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_scores_are_stable(backend):
    """Scores in the hundreds: a kernel without a max-subtracted softmax overflows."""
    p = P.problem((5, 6), 3, stride=(2, 1), is_causal=(True, False), n_extra=2, scale=1.0, head_dim=16)
    x = P.make_inputs(p, np.random.default_rng(11))
    for a in (x.q, x.k, x.ak):
        a *= 6.0
    got = P.run(p, x, backend)
    want = P.run_oracle(p, x)
    assert np.all(np.isfinite(got.out)) and np.all(np.isfinite(got.lse))
    assert np.max(want.lse) > 200.0  # really large
    P.assert_close(got, want, 1e-4, f"backend={backend!r}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic(backend):
    p = P.FEATURE_CASES["3d-causal-extra-scale"]
    x = P.make_inputs(p, np.random.default_rng(2))
    fn = jax.jit(P._grad_fn(p, backend))
    args = x.arrays(P.F32) + (P.put(x.dout), P.put(x.dlse))
    with P.backend_context(backend):
        first = jax.tree_util.tree_map(np.asarray, fn(*args))
        second = jax.tree_util.tree_map(np.asarray, fn(*args))
    jax.tree_util.tree_map(np.testing.assert_array_equal, first, second)


@pytest.mark.parametrize(
    "case", [P.problem((6,), 3, stride=2, n_extra=2, heads=2, heads_kv=1, head_dim=4),
             P.problem((4, 5), (2, 3), dilation=(2, 1), is_causal=(False, True), head_dim=4, heads=1, heads_kv=1)],
    ids=["1d-extra-mqa", "2d-dilated-causal"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_check_grads(backend, case):
    """jax.test_util.check_grads (reverse mode vs finite differences) through out and lse."""
    x = P.make_inputs(case, np.random.default_rng(P.stable_seed(case)))
    q, k, v, ak, av = x.arrays(P.F32)
    f = P.attention_fn(case, backend)
    with P.backend_context(backend):
        if case.n_extra:
            check_grads(jax.jit(f), (q, k, v, ak, av), order=1, modes=["rev"], eps=1e-2, atol=5e-3, rtol=5e-3)
        else:
            check_grads(jax.jit(lambda q, k, v: f(q, k, v)), (q, k, v), order=1, modes=["rev"],
                        eps=1e-2, atol=5e-3, rtol=5e-3)


# --- which code actually runs --------------------------------------------------------------

def _compiled_text(backend, grads=False):
    p = P.FEATURE_CASES["2d-mixed"]
    x = P.make_inputs(p, np.random.default_rng(0))
    args = x.arrays(P.F32)[:3]
    f = attn = P.attention_fn(p, backend)
    if grads:
        f = jax.grad(lambda q, k, v: sum(jnp.sum(t) for t in attn(q, k, v)), argnums=(0, 1, 2))
    with P.backend_context(backend):
        return jax.jit(f).lower(*args).compile().as_text()


@pytest.mark.parametrize("family", P.native_backends())
def test_native_family_really_runs(family):
    """backend=family compiles to that family's FFI custom calls (not the XLA fallback), and so
    does backend=None on this platform."""
    for backend in (family, None):
        fwd, bwd = _compiled_text(backend), _compiled_text(backend, grads=True)
        for direction, text in (("fwd", fwd), ("bwd", bwd)):
            target = f"jax_na_{direction}_{family.replace('-', '_')}"
            assert target in text, f"backend={backend!r}: no custom call {target} in the compiled HLO"


def test_xla_fallback_has_no_custom_call():
    text = _compiled_text(P.XLA_FALLBACK, grads=True)
    assert "jax_na_fwd_" not in text and "jax_na_bwd_" not in text


def test_default_backend_resolution():
    from jax_na import backends
    if jax_na.available_families():
        assert backends.resolve(None) == backends.AUTO
    else:
        assert backends.resolve(None) == backends.REFERENCE
    assert backends.resolve("reference") == "reference"


def test_cuda_routing_table(monkeypatch):
    """Which family each CUDA problem lowers to, with every family built and an sm_90 GPU
    (faked): backend=None prefers cuda-hopper for f16/bf16 at head_dim 64/128/256 and for the
    backward at 32, cuda-fused for the other tensor-core cases (the forward at 32), cuda-naive
    otherwise; explicit choices route what a family lacks, and cuda-hopper is refused on other
    GPUs with the reason."""
    from jax_na import _native, backends
    monkeypatch.setattr(_native, "has_family", lambda f: True)
    monkeypatch.setattr(_native, "has_cuda_device", lambda: True)
    monkeypatch.setattr(_native, "cuda_compute_capabilities", lambda: frozenset({"9.0"}))
    route = lambda b, dt, d: backends.family_for("cuda", b, dt, d)  # noqa: E731
    bf16, f16, f32 = jnp.bfloat16, jnp.float16, jnp.float32
    assert route(backends.AUTO, bf16, 128) == "cuda-hopper"
    assert route(backends.AUTO, f16, 64) == "cuda-hopper"
    assert route(backends.AUTO, bf16, 32) == "cuda-fused"
    assert route(backends.AUTO, f32, 64) == "cuda-naive"
    assert route(backends.AUTO, bf16, 40) == "cuda-naive"
    assert route("cuda-hopper", bf16, 64) == "cuda-hopper"
    assert route("cuda-hopper", f32, 128) == "cuda-fused"
    assert route("cuda-hopper", bf16, 32) == "cuda-hopper"
    assert backends.family_for("cuda", backends.AUTO, bf16, 32, "bwd") == "cuda-hopper"
    assert backends.family_for("cuda", backends.AUTO, f32, 32, "bwd") == "cuda-naive"
    assert route("cuda-hopper", bf16, 40) == "cuda-naive"
    assert route(backends.AUTO, bf16, 256) == "cuda-hopper"
    assert route("cuda-hopper", f16, 256) == "cuda-hopper"
    assert route("cuda-hopper", f32, 256) == "cuda-naive"  # cuda-fused has no head_dim 256
    assert backends.resolve("cuda-hopper") == "cuda-hopper"
    monkeypatch.setattr(_native, "cuda_compute_capabilities", lambda: frozenset({"8.0"}))
    assert route(backends.AUTO, bf16, 128) == "cuda-fused"
    with pytest.raises(ValueError, match=r"'cuda-hopper' is not available: it needs GPUs of compute capability 9.0"):
        backends.resolve("cuda-hopper")
