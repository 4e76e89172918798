"""Hardening: export/serialization, non-finite inputs, large magnitudes, determinism of the CPU
backward, and native (FFI) errors reaching Python.

Backends: "cpu" (the native family; skipped when not built) and None (the public default);
the non-finite tests also run "reference" and "xla-fallback" against semantics-derived masks.

Exporting needs
`disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(t) for t in jax_na target names]`;
Exported.serialize() needs the optional `flatbuffers` package (skipped without it).
"""

import functools
import re

import numpy as np
import jax
import jax.numpy as jnp
import pytest

import jax_na
from jax_na import _native, tuning

from . import oracle
from . import problems as P

HAS_CPU = "cpu" in jax_na.available_families()
CPU = pytest.param("cpu", id="cpu", marks=pytest.mark.skipif(
    not HAS_CPU, reason="native CPU family not built (jax_na.available_families() lacks 'cpu')"))
NONE = pytest.param(None, id="None")
BACKENDS = [CPU, NONE]
needs_cpu = pytest.mark.skipif(not HAS_CPU, reason="native CPU family not built")

TARGETS = tuple(_native.target_name(d, f) for f in _native.CPU_FAMILIES + _native.CUDA_FAMILIES
                for d in ("fwd", "bwd")) + (_native.HOPPER_RD_TARGET,)


@pytest.fixture(autouse=True)
def _no_tuning_cache(monkeypatch):
    """backend=None must choose the same family whatever ~/.cache/jax_na/tuning.json says."""
    monkeypatch.setattr(tuning, "_entries", lambda: {})


def _na(p, backend):
    kw = p.kwargs()
    return lambda q, k, v: jax_na.neighborhood_attention(q, k, v, **kw, return_lse=True, backend=backend)


def _grad(p, backend):
    f = _na(p, backend)

    def loss(q, k, v, dout, dlse):
        out, lse = f(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * dout) + jnp.sum(lse * dlse)

    return jax.grad(loss, argnums=(0, 1, 2))


def _arrays(x: P.Inputs, dtype=P.F32):
    return x.arrays(dtype)[:3]


def _np(tree):
    return [np.asarray(t, np.float64) for t in jax.tree_util.tree_leaves(tree)]


# --- 1. jax.export ------------------------------------------------------------------------------

EXPORT_CASE = P.problem((7, 9), (3, 4), stride=(2, 1), dilation=(2, 1), is_causal=(True, False),
                        heads=4, heads_kv=2)


def _export_fns(backend):
    p = EXPORT_CASE
    x = P.make_inputs(p, np.random.default_rng(11))
    args = _arrays(x) + (P.put(x.dout), P.put(x.dlse))
    fwd = jax.jit(lambda q, k, v, dout, dlse: _na(p, backend)(q, k, v))
    bwd = jax.jit(_grad(p, backend))
    return {"fwd": fwd, "bwd": bwd}, args


def _shapes(args):
    return [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in args]


def _uses_native(fn, args) -> bool:
    text = fn.lower(*args).as_text()
    return any(t in text for t in TARGETS)


DISABLED = [jax.export.DisabledSafetyCheck.custom_call(name) for name in TARGETS]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["fwd", "bwd"])
def test_export_needs_disabled_custom_call_checks(backend, which):
    """jax_na's FFI targets are not in JAX's stable-custom-call allowlist: exporting a program that
    lowers to them needs `disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(t) for t in
    ("jax_na_fwd_cpu", "jax_na_bwd_cpu", ...)]`; without it jax.export refuses and names the target."""
    fns, args = _export_fns(backend)
    fn = fns[which]
    if not _uses_native(fn, args):
        pytest.skip("this backend lowers to the XLA fallback here (no custom call to refuse)")
    with pytest.raises(ValueError, match=r"(?s)custom calls whose targets have no compatibility.*@jax_na_"):
        jax.export.export(fn)(*_shapes(args))
    jax.export.export(fn, disabled_checks=DISABLED)(*_shapes(args))  # and with it, it exports


def _check_exported_call(exp, fn, args):
    got = _np(exp.call(*args))
    want = _np(fn(*args))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_array_equal(g, w)  # same program, same kernels: bit-identical


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["fwd", "bwd"])
def test_export_call_matches_direct(backend, which):
    fns, args = _export_fns(backend)
    fn = fns[which]
    exp = jax.export.export(fn, disabled_checks=DISABLED)(*_shapes(args))
    text = exp.mlir_module()
    if backend == "cpu":
        assert f"jax_na_{which}_cpu" in text, "export should hold the native custom call"
    _check_exported_call(exp, fn, args)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["fwd", "bwd"])
def test_export_serialize_roundtrip(backend, which):
    pytest.importorskip("flatbuffers", reason="Exported.serialize() needs the 'flatbuffers' package")
    fns, args = _export_fns(backend)
    fn = fns[which]
    exp = jax.export.export(fn, disabled_checks=DISABLED)(*_shapes(args))
    blob = exp.serialize()
    assert isinstance(blob, (bytes, bytearray)) and len(blob) > 0
    back = jax.export.deserialize(blob)
    assert back.in_avals == exp.in_avals and back.out_avals == exp.out_avals
    _check_exported_call(back, fn, args)


# --- 2. non-finite inputs -----------------------------------------------------------------------

NONFINITE_CASES = {
    "1d": P.problem((13,), 5, heads=4, heads_kv=2),
    "1d-dil-causal-stride": P.problem((19,), 3, stride=2, dilation=3, is_causal=True, heads=4, heads_kv=2),
    "2d-dil-causal": P.problem((7, 9), (3, 4), stride=(2, 1), dilation=(2, 1), is_causal=(True, False),
                               heads=4, heads_kv=2),
}


def _poison(p, x: P.Inputs, which: str, value: float, seed: int):
    """A copy of x with `value` in one channel of one head of one token of q, k or v."""
    rng = np.random.default_rng(seed)
    arr = getattr(x, which).copy()
    idx = tuple(int(rng.integers(0, n)) for n in arr.shape)
    arr[idx] = value
    return P.Inputs(**{**x.__dict__, which: arr}), idx


def _mask_mismatch(got, want, what):
    g, w = ~np.isfinite(got), ~np.isfinite(want)
    if np.array_equal(g, w):
        return None
    only_got = np.argwhere(g & ~w)[:4].tolist()
    only_want = np.argwhere(w & ~g)[:4].tolist()
    return (f"{what}: non-finite at {int(g.sum())} positions, expected {int(w.sum())}; "
            f"only got e.g. {only_got}, only expected e.g. {only_want}")


@functools.lru_cache(maxsize=None)
def _jitted_na(p, backend):
    return jax.jit(_na(p, backend))


def _nonfinite_params():
    out = []
    for name in NONFINITE_CASES:
        for which in ("q", "k", "v"):
            for vid, value in (("nan", np.nan), ("+inf", np.inf), ("-inf", -np.inf)):
                for b in BACKENDS:
                    out.append(pytest.param(name, which, value, b.values[0], marks=b.marks,
                                            id=f"{name}-{which}-{vid}-{b.id}"))
    return out


@pytest.mark.parametrize("name,which,value,backend", _nonfinite_params())
def test_nonfinite_inputs_propagate_like_reference(name, which, value, backend):
    """A NaN/Inf in one channel of one q/k/v token: the non-finite entries of out and lse are
    exactly the reference's, and the finite ones match it."""
    p = NONFINITE_CASES[name]
    base = P.make_inputs(p, np.random.default_rng(P.stable_seed("nonfinite", name)))
    problems = []
    for seed in range(3):  # a few poisoned positions per case
        x, idx = _poison(p, base, which, value, P.stable_seed(name, which, seed))
        q, k, v = _arrays(x)
        got = _jitted_na(p, backend)(q, k, v)
        want = _jitted_na(p, "reference")(q, k, v)
        for what, g, w in zip(("out", "lse"), _np(got), _np(want)):
            bad = _mask_mismatch(g, w, f"{what} (poisoned {which}{idx})")
            if bad:
                problems.append(bad)
                continue
            fin = np.isfinite(w)
            if np.isnan(value) and what == "out":
                assert (~fin).any(), "a NaN input should reach some output (test is vacuous otherwise)"
            err = P.rel_err(g[fin], w[fin])
            if not err <= 1e-5:
                problems.append(f"{what} (poisoned {which}{idx}): finite entries differ, rel err {err:.2e}")
    assert not problems, "\n".join(problems)


def _expected_nonfinite(p, which, idx):
    """{out, lse, dq, dk, dv}: bool masks of the entries a NaN (or a +-Inf value) at q/k/v[idx]
    must reach, from the semantics (tests/oracle.py's dense neighbour mask N):
    - NaN query x (head h): out/lse row (x, h); dq row (x, h); dk, dv of the keys in N(x).
    - NaN key y: the rows R = {x : y in N(x)} (all query heads of its kv head) in out, lse and dq;
      dk, dv of the keys in N(R).
    - non-finite value y, channel c: out[R, heads, c] only (lse finite); through
      delta = rowsum(dout * out), dq rows R and dk of N(R); dv stays finite (it does not read v).
    """
    b, *spatial, h, d = (p.batch, *p.spatial, p.heads, p.head_dim)
    n, group = int(np.prod(spatial)), p.heads // p.heads_kv
    m = oracle.dense_mask(p.spatial, p.kernel_size, p.stride, p.dilation, p.is_causal)  # [query, key]
    e = {"out": np.zeros((b, n, h, d), bool), "lse": np.zeros((b, n, h), bool),
         "dq": np.zeros((b, n, h, d), bool), "dk": np.zeros((b, n, p.heads_kv, d), bool)}
    e["dv"] = np.zeros_like(e["dk"])
    bi, tok, head, ch = idx[0], int(np.ravel_multi_index(idx[1:-2], spatial)), idx[-2], idx[-1]
    if which == "q":
        rows, heads, kvh = np.array([tok]), slice(head, head + 1), head // group
    else:
        rows, heads, kvh = np.nonzero(m[:, tok])[0], slice(head * group, (head + 1) * group), head
    keys = np.nonzero(m[rows].any(axis=0))[0]
    if which == "v":
        e["out"][bi, rows, heads, ch] = True
    else:
        e["out"][bi, rows, heads, :] = e["lse"][bi, rows, heads] = True
        e["dv"][bi, keys, kvh, :] = True
    e["dq"][bi, rows, heads, :] = True
    e["dk"][bi, keys, kvh, :] = True
    return {n_: a.reshape(b, *spatial, *a.shape[2:]) for n_, a in e.items()}


def _semantic_params():
    out = []
    for name in NONFINITE_CASES:
        for which, vid, value in (("q", "nan", np.nan), ("k", "nan", np.nan), ("v", "nan", np.nan),
                                  ("v", "+inf", np.inf), ("v", "-inf", -np.inf)):
            for b in BACKENDS + [pytest.param("reference", id="reference"),
                                 pytest.param(P.XLA_FALLBACK, id=P.XLA_FALLBACK)]:
                out.append(pytest.param(name, which, value, b.values[0], marks=b.marks,
                                        id=f"{name}-{which}-{vid}-{b.id}"))
    return out


@pytest.mark.parametrize("name,which,value,backend", _semantic_params())
def test_nonfinite_reaches_exactly_the_neighbourhood(name, which, value, backend):
    """Ground truth from the semantics, not from the reference: a NaN (or +-Inf value) reaches
    exactly the outputs whose neighbourhood holds the poisoned token, and exactly the gradients
    that depend on those (see _expected_nonfinite)."""
    p = NONFINITE_CASES[name]
    base = P.make_inputs(p, np.random.default_rng(P.stable_seed("nonfinite", name)))
    problems = []
    for seed in range(3):
        x, idx = _poison(p, base, which, value, P.stable_seed(name, which, seed))
        with P.backend_context(backend):  # xla-fallback: the primitives lowered to reference math
            got = _run_grads(p, x, backend)
        for what, w in _expected_nonfinite(p, which, idx).items():
            g = got[what]
            assert w.any() or what in ("lse", "dv")
            bad = _mask_mismatch(g, np.where(w, np.nan, 0.0), f"{what} (poisoned {which}{idx})")
            if bad:
                problems.append(bad)
    assert not problems, "\n".join(problems)



def _grad_mask_params():
    out = []
    for name in NONFINITE_CASES:
        for which in ("q", "k", "v"):
            for b in BACKENDS:
                out.append(pytest.param(name, which, b.values[0], marks=b.marks, id=f"{name}-{which}-{b.id}"))
    return out


@pytest.mark.parametrize("name,which,backend", _grad_mask_params())
def test_nonfinite_gradients_like_reference(name, which, backend):
    """A NaN in q/k/v: the gradients' non-finite entries are the reference's, finite ones match."""
    p = NONFINITE_CASES[name]
    base = P.make_inputs(p, np.random.default_rng(P.stable_seed("nonfinite-grad", name)))
    problems = []
    for seed in range(2):
        x, idx = _poison(p, base, which, np.nan, P.stable_seed(name, which, seed))
        got = _run_grads(p, x, backend)
        want = _run_grads(p, x, "reference")
        for what in ("dq", "dk", "dv"):
            g, w = got[what], want[what]
            bad = _mask_mismatch(g, w, f"{what} (NaN at {which}{idx})")
            fin = np.isfinite(w)
            if bad:
                problems.append(bad)
            elif not P.rel_err(g[fin], w[fin]) <= 1e-5:
                problems.append(f"{what} (NaN at {which}{idx}): finite entries differ")
    assert not problems, "\n".join(problems)

# --- 3. large magnitudes ------------------------------------------------------------------------

LARGE_CASE = P.problem((7, 9), (3, 4), stride=(2, 1), dilation=(2, 1), is_causal=(True, False),
                       heads=4, heads_kv=2, head_dim=16)
# (|q| ~ |k| amplitude, scale): score offsets reach +-1e4 in every dtype. In float16 the raw
# products q.k reach 9e4 > 65504 (float16's max), so they must be accumulated in float32.
LARGE = {P.F32: (200.0, None), P.BF16: (200.0, None), P.F16: (300.0, 1.0 / 9.0)}
SCORE = 1e4


def _large_problem_inputs(dtype):
    """Rows of scores at +-1e4 (+-50 per row) whose within-row spread is O(1): a softmax that does
    not subtract its max overflows (exp(1e4)) or loses the row (log(0) for exp(-1e4)); gradients
    stay O(1e2). Inputs are rounded to `dtype` (the returned numpy copy is what the kernels see)."""
    amp, scale = LARGE[dtype]
    p = P.dataclasses.replace(LARGE_CASE, scale=scale)
    sc = p.resolved_scale
    rng = np.random.default_rng(P.stable_seed("large", jnp.dtype(dtype).name))
    b, hkv, h, d = p.batch, p.heads_kv, p.heads, p.head_dim
    u = rng.standard_normal((hkv, d))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    c = SCORE / (sc * amp)  # key amplitude: scale * amp * c = SCORE
    eps = 1.0 / (sc * amp)  # key noise: within-row score spread ~ 1
    sign = rng.choice([-1.0, 1.0], size=(b, *p.spatial, h, 1))
    q = sign * amp * np.repeat(u, h // hkv, axis=0) + rng.standard_normal((b, *p.spatial, h, d))
    k = c * u + eps * rng.standard_normal((b, *p.spatial, hkv, d))
    v = rng.standard_normal((b, *p.spatial, hkv, d))
    x = P.Inputs(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), None, None,
                 rng.standard_normal(q.shape).astype(np.float32),
                 rng.standard_normal(q.shape[:-1]).astype(np.float32))
    return p, x.rounded(dtype)


@functools.lru_cache(maxsize=None)
def _jitted_grad_and_out(p, backend):
    f = _na(p, backend)

    def loss(q, k, v, dout, dlse):
        out, lse = f(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * dout) + jnp.sum(lse * dlse), (out, lse)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))


def _run_grads(p, x, backend, dtype=P.F32):
    """{out, lse, dq, dk, dv} (float64 numpy) of loss <out, dout> + <lse, dlse>, one jit per (p, backend)."""
    q, k, v = _arrays(x, dtype)
    g, (out, lse) = _jitted_grad_and_out(p, backend)(q, k, v, P.put(x.dout), P.put(x.dlse))
    assert out.dtype == jnp.dtype(dtype) and g[0].dtype == jnp.dtype(dtype)
    return dict(zip(("out", "lse", "dq", "dk", "dv"), _np((out, lse) + tuple(g))))


# Relative error allowed against the float64 oracle: the dtype's usual tolerance plus the
# float32 rounding of scores of size 1e4 (~1e-3 in the exponent, hence in the weights).
LARGE_TOL = {P.F32: 2e-3, P.BF16: 2e-2, P.F16: 3e-3}


@pytest.mark.parametrize("backend", BACKENDS + [pytest.param("reference", id="reference")])
@pytest.mark.parametrize("dtype", [P.F32, P.BF16, P.F16], ids=["f32", "bf16", "f16"])
def test_large_magnitudes_stay_finite_and_accurate(dtype, backend):
    p, x = _large_problem_inputs(dtype)
    got = _run_grads(p, x, backend, dtype)
    want = P.run_oracle(p, x).named()
    lse = want["lse"]
    assert np.abs(lse).max() > 0.9 * SCORE and lse.min() < -0.9 * SCORE, "scores do not reach +-1e4"
    bad = [n for n, a in got.items() if not np.all(np.isfinite(a))]
    assert not bad, f"non-finite entries in {bad}"
    tol = LARGE_TOL[dtype]
    errs = {n: P.rel_err(got[n], want[n]) for n in got}
    assert all(e <= tol for e in errs.values()), f"relative errors vs float64 oracle above {tol}: {errs}"
    if backend != "reference":
        ref = _run_grads(p, x, "reference", dtype)
        errs = {n: P.rel_err(got[n], ref[n]) for n in got}
        assert all(e <= tol for e in errs.values()), f"relative errors vs reference above {tol}: {errs}"


# --- 4. determinism of the CPU kernels ----------------------------------------------------------

# Large enough that the CPU family uses several workers (one per ~1M multiply-adds, see
# cuda/cpu/parallel.h), small enough to run in well under a second.
DET_CASE = P.problem((24, 20), (5, 4), stride=(1, 2), dilation=(2, 1), is_causal=(False, True),
                     batch=2, heads=4, heads_kv=2, head_dim=32)


@needs_cpu
def test_cpu_kernels_are_bitwise_deterministic(monkeypatch):
    """Forward and backward give bit-identical results run to run, and for any worker count
    (JAX_NA_CPU_THREADS is read on every call: each output element is owned by one task)."""
    p = DET_CASE
    x = P.make_inputs(p, np.random.default_rng(5))
    fn = _jitted_grad_and_out(p, "cpu")
    args = _arrays(x) + (P.put(x.dout), P.put(x.dlse))

    def once():
        g, (out, lse) = fn(*args)
        return [np.asarray(t) for t in (out, lse) + tuple(g)]

    names = ("out", "lse", "dq", "dk", "dv")
    monkeypatch.delenv("JAX_NA_CPU_THREADS", raising=False)
    first = once()
    runs = {"default#2": once(), "default#3": once()}
    for threads in ("1", "3", "8"):
        monkeypatch.setenv("JAX_NA_CPU_THREADS", threads)
        runs[f"threads={threads}"] = once()
    for label, got in runs.items():
        for n, a, b in zip(names, got, first):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"{n} differs bitwise ({label})"
    # and they are right
    want = P.run_oracle(p, x).named()
    errs = {n: P.rel_err(a, want[n]) for n, a in zip(names, first)}
    assert all(e <= P.TOL[jnp.dtype(P.F32)] for e in errs.values()), errs


# --- 5. native errors reach Python --------------------------------------------------------------

FFI_Q_SHAPE = (1, 12, 4, 8)  # [B, L, H, D]
FFI_KV_SHAPE = (1, 12, 2, 8)


def _ffi_inputs():
    rng = np.random.default_rng(3)
    q = P.put(rng.standard_normal(FFI_Q_SHAPE))
    k = P.put(rng.standard_normal(FFI_KV_SHAPE))
    v = P.put(rng.standard_normal(FFI_KV_SHAPE))
    return q, k, v


def _attrs(scale=8 ** -0.5, **over):
    a = dict(kernel_size=[3], stride=[1], dilation=[1], is_causal=[0])
    a.update(over)
    out = {n: np.asarray(val, np.int64) for n, val in a.items()}
    out["scale"] = np.float32(scale)
    return out


def _fwd_call(q, k, v, lse_shape=None, **attrs):
    lse_shape = q.shape[:-1] if lse_shape is None else lse_shape
    call = jax.ffi.ffi_call("jax_na_fwd_cpu", (jax.ShapeDtypeStruct(q.shape, q.dtype),
                                               jax.ShapeDtypeStruct(lse_shape, jnp.float32)))
    return jax.block_until_ready(jax.jit(lambda q, k, v: call(q, k, v, **_attrs(**attrs)))(q, k, v))


def _bwd_call(q, k, v, dout, lse, delta, **attrs):
    call = jax.ffi.ffi_call("jax_na_bwd_cpu", tuple(jax.ShapeDtypeStruct(t.shape, t.dtype) for t in (q, k, v)))
    return jax.block_until_ready(jax.jit(lambda *a: call(*a, **_attrs(**attrs)))(q, k, v, dout, lse, delta))


FFI_ERRORS = {
    "kernel-longer-than-rank": (dict(kernel_size=[3, 3]), r"kernel_size must have one entry per spatial dimension"),
    "k*d>extent": (dict(dilation=[5]), r"kernel_size \* dilation must not exceed the extent"),
    "kernel>extent": (dict(kernel_size=[13]), r"kernel_size \* dilation must not exceed the extent"),
    "huge-dilation-overflow": (dict(dilation=[2 ** 62]), r"kernel_size \* dilation must not exceed the extent"),
    "kernel<2": (dict(kernel_size=[1]), r"kernel_size must be >= 2"),
    "stride>kernel": (dict(stride=[4]), r"stride must satisfy 1 <= stride <= kernel_size"),
    "stride<1": (dict(stride=[0]), r"stride must satisfy 1 <= stride <= kernel_size"),
    "dilation<1": (dict(dilation=[0]), r"dilation must be >= 1"),
    "causal=2": (dict(is_causal=[2]), r"is_causal must be 0 or 1"),
    "nan-scale": (dict(scale=np.nan), r"scale must be finite"),
    "lse-shape": (dict(lse_shape=(1, 12, 3)), r"lse has shape"),
}


def _assert_native_error(excinfo, rule):
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, RuntimeError), type(excinfo.value)  # jax.errors.JaxRuntimeError
    # "jax_na fwd: ..." / "jax_na bwd: ...": raised by the native decoder (cuda/ffi/decode.h)
    assert re.search(r"jax_na (fwd|bwd): ", msg) and re.search(rule, msg), \
        f"{type(excinfo.value).__name__} does not name the rule {rule!r}: {msg}"


@needs_cpu
@pytest.mark.parametrize("case", list(FFI_ERRORS))
def test_native_fwd_errors_reach_python(case):
    over, rule = FFI_ERRORS[case]
    q, k, v = _ffi_inputs()
    with pytest.raises(Exception) as excinfo:
        _fwd_call(q, k, v, **over)
    _assert_native_error(excinfo, rule)
    _check_valid_ffi_call_after_error(q, k, v)


def _check_valid_ffi_call_after_error(q, k, v):
    """The process (and the FFI target) still work: a valid direct call matches the reference."""
    out, lse = _fwd_call(q, k, v)
    ref_out, ref_lse = jax_na.na1d(q, k, v, 3, return_lse=True, backend="reference")
    assert P.rel_err(out, ref_out) <= 1e-5 and P.rel_err(lse, ref_lse) <= 1e-5


@needs_cpu
@pytest.mark.parametrize("case", ["heads-not-multiple", "int32-dtype", "kv-length-mismatch"])
def test_native_fwd_shape_and_dtype_errors_reach_python(case):
    q, k, v = _ffi_inputs()
    if case == "heads-not-multiple":
        k, v = k[:, :, :1].repeat(3, axis=2), v[:, :, :1].repeat(3, axis=2)  # 4 query heads, 3 kv heads
        rule = r"must be a positive multiple of key/value heads"
    elif case == "int32-dtype":
        q, k, v = (t.astype(jnp.int32) for t in (q, k, v))
        rule = r"query dtype must be float32, float16 or bfloat16"
    else:
        k, v = k[:, :11], v[:, :11]
        rule = r"must match query .* in batch and spatial extents"
    with pytest.raises(Exception) as excinfo:
        _fwd_call(q, k, v)
    _assert_native_error(excinfo, rule)
    _check_valid_ffi_call_after_error(*_ffi_inputs())


@needs_cpu
@pytest.mark.parametrize("case", ["k*d>extent", "delta-shape", "dq-dtype"])
def test_native_bwd_errors_reach_python(case):
    q, k, v = _ffi_inputs()
    dout = q
    lse = P.put(np.zeros(q.shape[:-1]))
    delta = P.put(np.zeros(q.shape[:-1]))
    over = {}
    if case == "k*d>extent":
        over, rule = dict(kernel_size=[4], dilation=[4]), r"kernel_size \* dilation must not exceed the extent"
    elif case == "delta-shape":
        delta, rule = P.put(np.zeros(q.shape[:-2])), r"delta has shape"
    else:
        dout, rule = P.put(np.asarray(q), P.BF16), r"dout has dtype bfloat16, expected float32"
    with pytest.raises(Exception) as excinfo:
        _bwd_call(q, k, v, dout, lse, delta, **over)
    _assert_native_error(excinfo, rule)
    _check_valid_ffi_call_after_error(q, k, v)
