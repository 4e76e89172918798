"""JAX transformations: jit, grad, vmap (no loops), checkpoint, their compositions, eval_shape
(no kernel runs) and low-precision dtypes, for every backend."""

import contextlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_na
from jax_na import backends as backends_mod
from jax_na import reference

from . import problems as P

ALL_BACKENDS = [pytest.param("reference", id="reference")] + P.api_backends()
# Backends that run through the primitives (so their jaxprs hold jax_na_fwd / jax_na_bwd).
PRIMITIVE_BACKENDS = [pytest.param(P.XLA_FALLBACK, id=P.XLA_FALLBACK)] + P.native_backends() + (
    [pytest.param(None, id="None")] if jax_na.available_families() else [])

CASE = P.problem((6, 7), (3, 2), stride=(2, 1), dilation=(1, 2), is_causal=(False, True),
                 heads=4, heads_kv=2, head_dim=8, n_extra=2)
VMAP = 3
RTOL = 2e-6  # same computation, differently batched: (nearly) bit-identical


def _inputs(p=CASE, seed=0, lead=()):
    """randn q, k, v, ak, av with extra leading (vmapped) axes."""
    rng = np.random.default_rng(seed)
    r = lambda *s: P.put(rng.standard_normal(lead + s))  # noqa: E731
    b, h, hkv, d = p.batch, p.heads, p.heads_kv, p.head_dim
    q, k, v = r(b, *p.spatial, h, d), r(b, *p.spatial, hkv, d), r(b, *p.spatial, hkv, d)
    ak, av = (r(b, p.n_extra, hkv, d), r(b, p.n_extra, hkv, d)) if p.n_extra else (None, None)
    return q, k, v, ak, av


def _close(a, b, rtol=RTOL, what=""):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        err = P.rel_err(np.asarray(x, np.float64), np.asarray(y, np.float64))
        assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:g}"


def _loss(p, backend):
    f = P.attention_fn(p, backend)

    def loss(q, k, v, ak=None, av=None):
        out, lse = f(q, k, v, ak, av)
        return jnp.sum(jnp.sin(out)) + jnp.sum(jnp.cos(lse))

    return loss


def _take(x, axis, i):
    return None if x is None else (x if axis is None else jnp.take(x, i, axis=axis))


def _moved(x, axis):
    """A [VMAP, ...] array with its vmapped axis moved to `axis` (None: the first slice)."""
    if x is None:
        return None
    return x[0] if axis is None else jnp.moveaxis(x, 0, axis)


def _sub_jaxprs(v):
    if hasattr(v, "eqns"):
        yield v
    elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
        yield v.jaxpr
    elif isinstance(v, (tuple, list)):
        for x in v:
            yield from _sub_jaxprs(x)


def all_eqns(jaxpr):
    """Every equation of a (closed) jaxpr, recursively through sub-jaxprs."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for sub in _sub_jaxprs(v):
                yield from all_eqns(sub)


LOOP_PRIMITIVES = {"while", "scan", "fori_loop", "map"}


def _check_no_loop(jaxpr, name, batch):
    eqns = list(all_eqns(jaxpr))
    hits = [e for e in eqns if e.primitive.name == name]
    assert len(hits) == 1, f"expected one {name}, found {len(hits)}: {sorted({e.primitive.name for e in eqns})}"
    assert hits[0].invars[0].aval.shape[0] == batch, hits[0].invars[0].aval.shape
    loops = sorted({e.primitive.name for e in eqns} & LOOP_PRIMITIVES)
    assert not loops, f"vmap created a loop: {loops}"


# --- jit, grad ---------------------------------------------------------------------------------

def _runs_reference(backend):
    return backend == "reference" or (backend is None and not jax_na.available_families())


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_jit_matches_eager(backend):
    """Eager (op-by-op, the primitives' impl) and jitted calls agree, gradients too (eager
    gradients only where the primitives run: for the reference that is plain JAX)."""
    p = P.Problem(**{**CASE.__dict__, "n_extra": 0})
    args = _inputs(p)[:3]
    f = P.attention_fn(p, backend)
    g = jax.grad(_loss(p, backend), argnums=(0, 1, 2))
    with P.backend_context(backend):
        _close(jax.jit(f)(*args), f(*args), what="out/lse")
        if not _runs_reference(backend):
            _close(jax.jit(g)(*args), g(*args), what="grads")


def test_params_are_part_of_the_compiled_program():
    """Two calls differing only in static params inside one jit give different, correct results."""
    p3, p5 = P.problem((9,), 3, stride=2), P.problem((9,), 5, is_causal=True)
    x = P.make_inputs(p3, np.random.default_rng(1))
    q, k, v, _, _ = x.arrays(P.F32)

    @jax.jit
    def both(q, k, v):
        return P.attention_fn(p3, None)(q, k, v), P.attention_fn(p5, None)(q, k, v)

    (o3, l3), (o5, l5) = both(q, k, v)
    assert P.rel_err(o3, o5) > 1e-2
    for p, o, l in ((p3, o3, l3), (p5, o5, l5)):
        want = P.run_oracle(p, x, grads=False)
        assert P.rel_err(o, want.out) < 1e-5 and P.rel_err(l, want.lse) < 1e-5


# --- vmap --------------------------------------------------------------------------------------

IN_AXES = {
    "all-0": (0, 0, 0, 0, 0),
    "kv-shared": (0, None, None, None, None),
    "q-axis1-extra-shared": (1, 0, 0, None, None),
    "q-shared": (None, 0, 0, 0, 0),
    "mixed-axes": (2, 1, 0, None, 1),
}


@pytest.mark.parametrize("axes", list(IN_AXES.values()), ids=list(IN_AXES))
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_vmap_matches_loop(backend, axes):
    stacked = _inputs(lead=(VMAP,), seed=2)
    args = tuple(_moved(x, a) for x, a in zip(stacked, axes))
    f = P.attention_fn(CASE, backend)
    with P.backend_context(backend):
        got = jax.jit(jax.vmap(f, in_axes=axes))(*args)
        jf = jax.jit(f)
        per = [jf(*(_take(x, a, i) for x, a in zip(args, axes))) for i in range(VMAP)]
    want = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per)
    _close(got, want, what=f"vmap in_axes={axes}")


def _while_ops(hlo_text: str) -> int:
    return len(re.findall(r"\bwhile\(", hlo_text)) + hlo_text.count("stablehlo.while")


@pytest.mark.parametrize("backend", PRIMITIVE_BACKENDS)
def test_vmap_folds_into_batch_without_loops(backend):
    """One forward primitive over VMAP * batch (and one backward primitive under grad), no
    while/scan in the jaxpr, no while in the lowered StableHLO, and no more while loops in the
    compiled HLO than the unbatched call has (XLA:CPU may expand a scatter into one)."""
    stacked = _inputs(lead=(VMAP,), seed=3)
    axes = IN_AXES["kv-shared"]
    args = tuple(_moved(x, a) for x, a in zip(stacked, axes))
    one = tuple(_take(x, a, 0) for x, a in zip(args, axes))
    f1 = P.attention_fn(CASE, backend)
    g1 = jax.grad(_loss(CASE, backend), argnums=(0, 1, 2))
    f, g = jax.vmap(f1, in_axes=axes), jax.vmap(g1, in_axes=axes)
    with P.backend_context(backend):
        _check_no_loop(jax.make_jaxpr(f)(*args), "jax_na_fwd", VMAP * CASE.batch)
        _check_no_loop(jax.make_jaxpr(g)(*args), "jax_na_bwd", VMAP * CASE.batch)
        for batched, single in ((f, f1), (g, g1)):
            lowered = jax.jit(batched).lower(*args)
            assert _while_ops(lowered.as_text()) == 0, "the lowered vmapped call has a while loop"
            n_batched = _while_ops(lowered.compile().as_text())
            n_single = _while_ops(jax.jit(single).lower(*one).compile().as_text())
            assert n_batched == n_single, f"vmap added while loops: {n_batched} vs {n_single} unbatched"


@pytest.mark.parametrize("backend", PRIMITIVE_BACKENDS)
def test_nested_vmap_folds_into_batch(backend):
    stacked = _inputs(lead=(2, VMAP), seed=4)
    f = P.attention_fn(CASE, backend)
    nested = jax.vmap(jax.vmap(f, in_axes=(0, 0, 0, None, None)), in_axes=(0, None, None, None, None))
    args = (stacked[0], stacked[1][0], stacked[2][0], stacked[3][0, 0], stacked[4][0, 0])
    with P.backend_context(backend):
        _check_no_loop(jax.make_jaxpr(nested)(*args), "jax_na_fwd", 2 * VMAP * CASE.batch)
        got = jax.jit(nested)(*args)
        jf = jax.jit(f)
        for i in range(2):
            for j in range(VMAP):
                _close(jax.tree_util.tree_map(lambda t: t[i, j], got),
                       jf(args[0][i, j], args[1][j], args[2][j], args[3], args[4]), what=f"[{i},{j}]")


# --- compositions with grad ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_grad_of_vmap(backend):
    """d/d(inputs) of a sum over a vmap with shared key/value: per-slice gradients for q and
    the sum of per-slice gradients for the shared arrays."""
    stacked = _inputs(lead=(VMAP,), seed=5)
    axes = (0, None, None, 0, None)
    args = tuple(_moved(x, a) for x, a in zip(stacked, axes))
    loss = _loss(CASE, backend)
    total = lambda *a: jnp.sum(jax.vmap(loss, in_axes=axes)(*a))  # noqa: E731
    with P.backend_context(backend):
        got = jax.jit(jax.grad(total, argnums=(0, 1, 2, 3, 4)))(*args)
        g1 = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))
        per = [g1(*(_take(x, a, i) for x, a in zip(args, axes))) for i in range(VMAP)]
    for n, (a, gi) in enumerate(zip(axes, got)):
        parts = [pg[n] for pg in per]
        want = jnp.stack(parts) if a == 0 else sum(parts)
        _close(gi, want, rtol=1e-5, what=f"grad arg {n}")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_vmap_of_grad(backend):
    stacked = _inputs(lead=(VMAP,), seed=6)
    loss = _loss(CASE, backend)
    g1 = jax.grad(loss, argnums=(0, 1, 2, 3, 4))
    with P.backend_context(backend):
        got = jax.jit(jax.vmap(g1))(*stacked)
        jg = jax.jit(g1)
        per = [jg(*(x[i] for x in stacked)) for i in range(VMAP)]
    _close(got, jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per), rtol=1e-5, what="vmap(grad)")


@pytest.mark.parametrize("policy", [None, "nothing_saveable"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_checkpoint(backend, policy):
    args = _inputs(seed=7)
    loss = _loss(CASE, backend)
    pol = None if policy is None else getattr(jax.checkpoint_policies, policy)
    remat = jax.checkpoint(loss, policy=pol)
    with P.backend_context(backend):
        want = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(*args)
        got = jax.jit(jax.grad(remat, argnums=(0, 1, 2, 3, 4)))(*args)
        # and nested in a larger checkpointed function
        got2 = jax.jit(jax.grad(jax.checkpoint(lambda *a: remat(*a) * 2.0), argnums=(0, 1, 2, 3, 4)))(*args)
    _close(got, want, rtol=1e-6, what="checkpoint")
    _close(got2, jax.tree_util.tree_map(lambda t: 2 * t, want), rtol=1e-6, what="checkpoint x2")


# --- eval_shape: shapes and dtypes without running anything ------------------------------------

_COMPILES = {"count": 0, "on": False}


def _compile_listener(event, duration, **kw):
    if _COMPILES["on"] and ("backend_compile" in event or "to_mlir_module" in event):  # not tracing
        _COMPILES["count"] += 1


jax.monitoring.register_event_duration_secs_listener(_compile_listener)


@contextlib.contextmanager
def count_compiles():
    _COMPILES.update(count=0, on=True)
    try:
        yield _COMPILES
    finally:
        _COMPILES["on"] = False


@contextlib.contextmanager
def no_kernel_may_run(monkeypatch_context):
    """The lowering of the primitives raises, and the reference function only ever sees tracers."""
    seen = []
    orig = reference.na_reference

    def spy(q, *a, **k):
        seen.append(isinstance(q, jax.core.Tracer))
        return orig(q, *a, **k)

    def boom(*a, **k):
        raise AssertionError("eval_shape lowered a primitive")

    monkeypatch_context.setattr(backends_mod, "family_for", boom)
    monkeypatch_context.setattr(reference, "na_reference", spy)
    yield seen


def test_compile_counter_and_guard_work():
    """Positive control for the eval_shape test: a real call compiles, and the guard fires."""
    p = P.problem((5,), 2)
    q, k, v, _, _ = _inputs(p, seed=8)
    with count_compiles() as c:
        jax.block_until_ready(jax.jit(lambda q, k, v: q * 2 + k - v)(q, k, v))
    assert c["count"] >= 1
    with P.backend_context(P.XLA_FALLBACK), pytest.MonkeyPatch.context() as mp, no_kernel_may_run(mp):
        with pytest.raises(Exception, match="eval_shape lowered a primitive"):
            jax.jit(P.attention_fn(p, P.XLA_FALLBACK))(q, k, v)


SHAPE_CASES = [
    P.problem((11,), 3, heads=2, heads_kv=1, head_dim=16),
    P.problem((6, 5), (3, 2), is_causal=(True, False), n_extra=3, batch=2, heads=4, heads_kv=2, head_dim=8),
    P.problem((4, 3, 5), 2, stride=(1, 2, 2), n_extra=1, heads=3, heads_kv=1, head_dim=32),
]


@pytest.mark.parametrize("dtype", [P.F32, P.F16, P.BF16], ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_eval_shape_runs_no_kernel(backend, dtype):
    for p in SHAPE_CASES:
        x = P.make_inputs(p, np.random.default_rng(0))
        args = [jax.ShapeDtypeStruct(a.shape, dtype) if a is not None else None for a in x.arrays(P.F32)]
        grad_fn = jax.grad(lambda *a: jnp.sum(P.attention_fn(p, backend)(*a)[1]), argnums=(0, 1, 2))
        with P.backend_context(backend), pytest.MonkeyPatch.context() as mp, no_kernel_may_run(mp) as seen, \
                count_compiles() as compiles:
            out, lse = jax.eval_shape(P.attention_fn(p, backend), *args)
            only_out = jax.eval_shape(P.attention_fn(p, backend, return_lse=False), *args)
            grads = jax.eval_shape(grad_fn, *args)
        assert compiles["count"] == 0, "eval_shape compiled something"
        assert all(seen), "the reference function ran on concrete arrays"
        assert (out.shape, out.dtype) == (args[0].shape, jnp.dtype(dtype))
        assert (only_out.shape, only_out.dtype) == (args[0].shape, jnp.dtype(dtype))
        assert (lse.shape, lse.dtype) == (args[0].shape[:-1], jnp.dtype(jnp.float32))
        for g, a in zip(grads, args):
            assert (g.shape, g.dtype) == (a.shape, a.dtype)


@pytest.mark.parametrize("dtype", [P.F16, P.BF16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_low_precision_dtypes(backend, dtype):
    """Real runs: out (with and without return_lse) in the input dtype, lse float32, finite."""
    p = SHAPE_CASES[1]
    q, k, v, ak, av = P.make_inputs(p, np.random.default_rng(9)).arrays(dtype)
    with P.backend_context(backend):
        out, lse = jax.jit(P.attention_fn(p, backend))(q, k, v, ak, av)
        only = jax.jit(P.attention_fn(p, backend, return_lse=False))(q, k, v, ak, av)
        grads = jax.jit(jax.grad(lambda *a: jnp.sum(P.attention_fn(p, backend)(*a)[0].astype(P.F32)),
                                 argnums=(0, 1, 2, 3, 4)))(q, k, v, ak, av)
    assert out.dtype == jnp.dtype(dtype) and only.dtype == jnp.dtype(dtype) and lse.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(only, np.float32))
    assert np.all(np.isfinite(np.asarray(out, np.float32))) and np.all(np.isfinite(lse))
    for g, a in zip(grads, (q, k, v, ak, av)):
        assert g.dtype == a.dtype and g.shape == a.shape
