"""Flax layers: the math against a hand-written call, shapes, parameter counts, every
transformation users wrap layers in, mixed precision, and Linen/NNX agreement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

import jax_na  # noqa: E402
from jax_na.flax import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D  # noqa: E402
from jax_na.flax import linen as na_linen  # noqa: E402

F, HEADS = 16, 2
LAYERS = {1: NeighborhoodAttention1D, 2: NeighborhoodAttention2D, 3: NeighborhoodAttention3D}
LINEN = {1: na_linen.NeighborhoodAttention1D, 2: na_linen.NeighborhoodAttention2D, 3: na_linen.NeighborhoodAttention3D}
SPATIAL = {1: (9,), 2: (6, 7), 3: (6, 4, 6)}


def _x(rank, batch=2, seed=0, features=F):
    return jax.random.normal(jax.random.key(seed), (batch, *SPATIAL[rank], features), jnp.float32)


def _layer(rank=2, **kw):
    kw = {"kernel_size": 3, **kw}
    return LAYERS[rank](HEADS, F, rngs=nnx.Rngs(0), **kw)


def _by_hand(layer, x, context=None, **na_kw):
    """Project with einsums, attend with jax_na.neighborhood_attention, project back."""
    def proj(name, t):
        p = getattr(layer, name)
        return jnp.einsum("...i,ihd->...hd", t, p.kernel[...]) + p.bias[...]

    extra = {}
    if context is not None:
        extra = dict(additional_keys=proj("key", context), additional_values=proj("value", context))
    y = jax_na.neighborhood_attention(proj("query", x), proj("key", x), proj("value", x), **na_kw, **extra)
    return jnp.einsum("...hd,hdo->...o", y, layer.out.kernel[...]) + layer.out.bias[...]


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_matches_hand_written_attention(rank):
    kw = dict(kernel_size=3, dilation=(2,) + (1,) * (rank - 1), stride=2, is_causal=(True,) + (False,) * (rank - 1))
    layer = _layer(rank, **kw)
    x = _x(rank)
    np.testing.assert_allclose(layer(x), _by_hand(layer, x, **kw), rtol=1e-5, atol=1e-5)


def test_context_tokens_and_backend_passthrough():
    layer = _layer(2, backend="reference")
    x, ctx = _x(2), jax.random.normal(jax.random.key(1), (2, 3, F))
    want = _by_hand(layer, x, ctx, kernel_size=3, backend="reference")
    np.testing.assert_allclose(layer(x, ctx), want, rtol=1e-5, atol=1e-5)
    default = _layer(2)  # same seed, so same weights; default backend agrees with reference
    np.testing.assert_allclose(default(x, ctx), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="context"):
        layer(x, ctx[0])


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_shapes_and_parameter_count(rank):
    layer = LAYERS[rank](HEADS, F, qkv_features=24, out_features=8, kernel_size=3, rngs=nnx.Rngs(0))
    assert layer(_x(rank)).shape == (2, *SPATIAL[rank], 8)
    count = lambda m: sum(p.size for p in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
    q, o = 24, 8
    assert count(layer) == 3 * (F * q + q) + q * o + o
    assert count(_layer(rank)) == 4 * F * F + 4 * F
    assert count(_layer(rank, use_bias=False)) == 4 * F * F


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        NeighborhoodAttention2D(3, F, kernel_size=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="spatial"):
        _layer(2)(jnp.ones((F,)))
    with pytest.raises(ValueError, match="kernel_size"):
        _layer(2, kernel_size=9)(_x(2))  # 9 > extent 6


def test_jit_nnx_jit_and_functional_jit():
    layer, x = _layer(2, dilation=2), _x(2)
    want = layer(x)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(layer, x), want, rtol=1e-5, atol=1e-5)
    graphdef, state = nnx.split(layer)
    got = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_vmap_over_examples_and_over_extra_axes():
    layer, x = _layer(2), _x(2, batch=3)
    want = layer(x)
    # Single examples (no batch dims left inside vmap) and an extra leading axis both work.
    np.testing.assert_allclose(jax.vmap(layer)(x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.vmap(layer))(x[None])[0], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(x[None])[0], want, rtol=1e-5, atol=1e-5)


def test_remat_and_checkpoint_gradients():
    layer, x = _layer(2), _x(2)

    def loss(m, x):
        return jnp.sum(m(x) ** 2)

    plain = nnx.grad(loss)(layer, x)
    remat = nnx.grad(lambda m, x: jnp.sum(nnx.remat(lambda m, x: m(x))(m, x) ** 2))(layer, x)
    graphdef, params = nnx.split(layer)
    ckpt = jax.grad(lambda p, x: jnp.sum(jax.checkpoint(lambda p, x: nnx.merge(graphdef, p)(x))(p, x) ** 2))(params, x)
    for g in (remat, ckpt):
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(plain)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(plain))


def test_bf16_compute_fp32_params():
    layer, x = _layer(2, dtype=jnp.bfloat16), _x(2)
    y = nnx.jit(lambda m, x: m(x))(layer, x)
    assert y.dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(layer, nnx.Param)))
    ref = _layer(2)(x)  # same weights in float32
    np.testing.assert_allclose(y.astype(jnp.float32), ref, rtol=0.1, atol=0.1)
    grads = nnx.grad(lambda m, x: jnp.sum(m(x).astype(jnp.float32)))(layer, x)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))


def test_dropout_on_output():
    layer, x = _layer(2, dropout_rate=0.5), _x(2)
    clean = layer(x, deterministic=True)
    np.testing.assert_allclose(clean, _layer(2)(x), rtol=1e-6)
    dropped = layer(x, deterministic=False)
    zeros = np.mean(np.asarray(dropped) == 0)
    assert 0.3 < zeros < 0.7
    np.testing.assert_allclose(np.asarray(dropped)[np.asarray(dropped) != 0], (2 * np.asarray(clean))[np.asarray(dropped) != 0], rtol=1e-5)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_linen_matches_nnx_with_copied_weights(rank):
    kw = dict(kernel_size=3, dilation=(1,) * (rank - 1) + (2,), is_causal=rank == 1)
    layer, x = _layer(rank, **kw), _x(rank)
    ctx = jax.random.normal(jax.random.key(2), (2, 2, F))
    module = LINEN[rank](num_heads=HEADS, **kw)
    init = module.init(jax.random.key(1), x, ctx)
    assert jax.tree.map(jnp.shape, init["params"]) == jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(layer, nnx.Param)))
    variables = {"params": nnx.to_pure_dict(nnx.state(layer, nnx.Param))}
    np.testing.assert_allclose(module.apply(variables, x, ctx), layer(x, ctx), rtol=1e-6, atol=1e-6)


def test_linen_under_jit_vmap_checkpoint_and_bf16():
    module, x = na_linen.NeighborhoodAttention2D(num_heads=HEADS, kernel_size=3), _x(2)
    variables = module.init(jax.random.key(0), x)
    want = module.apply(variables, x)
    np.testing.assert_allclose(jax.jit(module.apply)(variables, x), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.vmap(module.apply, in_axes=(None, 0))(variables, x), want, rtol=1e-5, atol=1e-5)
    remat = nn.remat(na_linen.NeighborhoodAttention2D)(num_heads=HEADS, kernel_size=3)
    g1 = jax.grad(lambda v: jnp.sum(remat.apply(v, x) ** 2))(variables)
    g2 = jax.grad(lambda v: jnp.sum(jax.checkpoint(module.apply)(v, x) ** 2))(variables)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    half = na_linen.NeighborhoodAttention2D(num_heads=HEADS, kernel_size=3, dtype=jnp.bfloat16)
    assert half.apply(variables, x).dtype == jnp.bfloat16
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(half.init(jax.random.key(0), x)))
