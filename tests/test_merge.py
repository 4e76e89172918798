"""merge_attentions: attention over disjoint key sets, merged by lse, equals attention over
their union; gradients flow through the merge into every part."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_na

from . import oracle
from . import problems as P

BACKENDS = [pytest.param("reference", id="reference")] + P.api_backends()


def jnp_dense(q, k, v, scale):
    """Plain float32 jnp attention of [B, *S, H, D] queries to [B, E, Hkv, D] tokens -> (out, lse)."""
    h, hkv = q.shape[-2], k.shape[-2]
    k, v = jnp.repeat(k, h // hkv, axis=2), jnp.repeat(v, h // hkv, axis=2)
    qf = q.reshape(q.shape[0], -1, h, q.shape[-1])
    s = jnp.einsum("bnhd,behd->bnhe", qf, k, precision="highest") * scale
    lse = jax.nn.logsumexp(s, axis=-1)
    out = jnp.einsum("bnhe,behd->bnhd", jnp.exp(s - lse[..., None]), v, precision="highest")
    return out.reshape(q.shape), lse.reshape(q.shape[:-1])


def _split_problem(p, x, split):
    """NA over the spatial keys plus extra tokens [:split] (through the backend), and dense
    attention over extra tokens [split:] (jnp): the two disjoint parts of p's key set."""
    ps = P.Problem(**{**p.__dict__, "n_extra": split})

    def parts(q, k, v, ak, av, backend):
        f = P.attention_fn(ps, backend)
        na = f(q, k, v, ak[:, :split], av[:, :split]) if split else f(q, k, v)
        dense = jnp_dense(q, ak[:, split:], av[:, split:], p.resolved_scale)
        return jax_na.merge_attentions([na[0], dense[0]], [na[1], dense[1]])

    return parts


@pytest.mark.parametrize("split", [0, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_merge_of_split_additional_kv_equals_union(backend, split):
    p = P.problem((5, 6), (3, 2), stride=(2, 1), is_causal=(True, False), n_extra=5, heads=4, heads_kv=2)
    x = P.make_inputs(p, np.random.default_rng(P.stable_seed("merge", split)))
    parts = _split_problem(p, x, split)

    def loss(q, k, v, ak, av, dout, dlse):
        out, lse = parts(q, k, v, ak, av, backend)
        return jnp.sum(out * dout) + jnp.sum(lse * dlse), (out, lse)

    with P.backend_context(backend):
        g, (out, lse) = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))(
            *x.arrays(P.F32), P.put(x.dout), P.put(x.dlse))
    got = P.Result(np.asarray(out, np.float64), np.asarray(lse, np.float64), tuple(np.asarray(t) for t in g))
    P.assert_close(got, P.run_oracle(p, x), 1e-5, f"merged parts vs union, backend={backend!r}")


def test_merge_of_dense_halves_equals_union():
    """Pure merge: attention over three disjoint token sets (in any order) equals attention
    over all of them; one part alone is returned unchanged."""
    rng = np.random.default_rng(1)
    q = rng.standard_normal((2, 4, 5, 3, 8)).astype(np.float32)
    k = rng.standard_normal((2, 11, 3, 8)).astype(np.float32)
    v = rng.standard_normal((2, 11, 3, 8)).astype(np.float32)
    want_out, want_lse = oracle.dense_attention(q, k, v, 0.4)
    cuts = [(0, 3), (3, 4), (4, 11)]
    dense = jax.jit(jnp_dense, static_argnums=3)
    merge = jax.jit(jax_na.merge_attentions)
    parts = [dense(P.put(q), P.put(k[:, a:b]), P.put(v[:, a:b]), 0.4) for a, b in cuts]
    for order in ([0, 1, 2], [2, 0, 1]):
        out, lse = merge([parts[i][0] for i in order], [parts[i][1] for i in order])
        assert out.dtype == jnp.float32 and lse.dtype == jnp.float32 and lse.shape == q.shape[:-1]
        assert P.rel_err(out, want_out) < 1e-5 and P.rel_err(lse, want_lse) < 1e-6
    out, lse = jax_na.merge_attentions([parts[0][0]], [parts[0][1]])
    np.testing.assert_allclose(out, parts[0][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(lse, parts[0][1], rtol=1e-6)
    # an unequal split really matters: dropping a part changes the answer
    out2, _ = jax_na.merge_attentions([parts[0][0], parts[2][0]], [parts[0][1], parts[2][1]])
    assert P.rel_err(out2, want_out) > 1e-3


def test_merge_gradients_flow_to_every_part():
    """Gradients through merge_attentions w.r.t. each part's tokens equal the union's (oracle)."""
    rng = np.random.default_rng(2)
    q = rng.standard_normal((1, 6, 2, 4)).astype(np.float32)
    k = rng.standard_normal((1, 7, 1, 4)).astype(np.float32)
    v = rng.standard_normal((1, 7, 1, 4)).astype(np.float32)
    dout = rng.standard_normal(q.shape).astype(np.float32)
    dlse = rng.standard_normal(q.shape[:-1]).astype(np.float32)
    # the union as a 1-D neighbourhood problem: kernel = extent is full attention over 6 spatial
    # tokens; the 7 "additional" tokens are split 3 + 4 across two dense parts
    ks = rng.standard_normal((1, 6, 1, 4)).astype(np.float32)
    vs = rng.standard_normal((1, 6, 1, 4)).astype(np.float32)

    def loss(q, ks, vs, k, v):
        na = jax_na.na1d(q, ks, vs, 6, return_lse=True, backend="reference")
        d1, d2 = jnp_dense(q, k[:, :3], v[:, :3], 0.5), jnp_dense(q, k[:, 3:], v[:, 3:], 0.5)
        out, lse = jax_na.merge_attentions([na[0], d1[0], d2[0]], [na[1], d1[1], d2[1]])
        return jnp.sum(out * dout) + jnp.sum(lse * dlse)

    got = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4)))(q, ks, vs, k, v)
    cfg = dict(kernel_size=(6,), stride=(1,), dilation=(1,), is_causal=(False,), scale=0.5)
    want = oracle.attention_vjp(q, ks, vs, cfg, dout, dlse, k, v)
    for name, a, b in zip(("dq", "dks", "dvs", "dk", "dv"), got, want):
        assert np.all(np.asarray(a) != 0) or name in ("dks", "dvs"), f"{name}: gradient did not flow"
        assert P.rel_err(a, b) < 1e-5, name


def test_merge_with_an_empty_part():
    """A part over no keys has lse = -inf: it contributes nothing, and nothing becomes NaN."""
    rng = np.random.default_rng(3)
    o = P.put(rng.standard_normal((1, 4, 2, 8)), jnp.float32)
    lse = P.put(rng.standard_normal((1, 4, 2)), jnp.float32)
    empty_o, empty_lse = jnp.zeros_like(o), jnp.full_like(lse, -jnp.inf)
    out, l = jax.jit(jax_na.merge_attentions)([o, empty_o], [lse, empty_lse])
    np.testing.assert_allclose(out, o, rtol=1e-6)
    np.testing.assert_allclose(l, lse, rtol=1e-6)
    g = jax.jit(jax.grad(lambda o, l: jnp.sum(jax_na.merge_attentions([o, empty_o], [l, empty_lse])[0]), argnums=(0, 1)))(o, lse)
    assert all(np.all(np.isfinite(t)) for t in g)


@pytest.mark.parametrize("dtype", [P.F16, P.BF16], ids=["float16", "bfloat16"])
def test_merge_dtypes(dtype):
    rng = np.random.default_rng(4)
    outs = [P.put(rng.standard_normal((2, 3, 2, 4)), dtype) for _ in range(2)]
    lses = [P.put(rng.standard_normal((2, 3, 2)), jnp.float32) for _ in range(2)]
    out, lse = jax_na.merge_attentions(outs, lses)
    assert out.dtype == jnp.dtype(dtype) and lse.dtype == jnp.float32
    w = jax.nn.softmax(jnp.stack(lses), axis=0)
    want = sum(wi[..., None] * o.astype(jnp.float32) for wi, o in zip(w, outs))
    assert P.rel_err(np.asarray(out, np.float32), want) < P.TOL[jnp.dtype(dtype)]
