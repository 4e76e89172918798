"""Multi-device cases, run by tests/test_sharding.py in a subprocess with 8 host CPU devices.

(XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before JAX starts, hence the
separate process; the file name keeps plain `pytest` from collecting it directly.)

Every case compares a sharded jit of (out, lse, dq, dk, dv) with the same computation on one
device, and reads the compiled HLO: batch/head sharding must have no collective at all, and
spatial parallelism only collective-permutes that carry exactly the halo rows.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jax_na
from jax_na import backends
from jax_na.autodiff import na_with_lse
from jax_na.params import make_params
from jax_na.halo_exchange import halo_widths, spatial_parallel

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 devices (run through test_sharding.py)")

COLLECTIVE = re.compile(
    r"=\s*(\S.*?)\s+(all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter|collective-broadcast)"
    r"(?:-start)?\(")


def collectives(hlo: str):
    """[(op, [shape tuples of its result type])] of every collective in compiled HLO text."""
    return [(op, [tuple(int(x) for x in dims.split(",") if x) for dims in re.findall(r"\w+\[([\d,]*)\]", ty)])
            for ty, op in COLLECTIVE.findall(hlo)]


def mesh(*shape_names):
    shape, names = shape_names[::2], shape_names[1::2]
    return Mesh(np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape), names)


def inputs(shape, heads_kv, seed=0, extra=0):
    b, *spatial, h, d = shape
    keys = jax.random.split(jax.random.key(seed), 7)
    kv = (b, *spatial, heads_kv, d)
    q, k, v, dout = (jax.random.normal(key, s, jnp.float32) for key, s in zip(keys, (shape, kv, kv, shape)))
    dlse = jax.random.normal(keys[4], shape[:-1], jnp.float32)
    ak = av = None
    if extra:
        ak = jax.random.normal(keys[5], (b, extra, heads_kv, d), jnp.float32)
        av = jax.random.normal(keys[6], (b, extra, heads_kv, d), jnp.float32)
    return (q, k, v, dout, dlse), (ak, av)


def with_grads(attention):
    """(q, k, v, dout, dlse) -> (out, lse, dq, dk, dv); cotangents given, so no loss reduction."""

    def run(q, k, v, dout, dlse):
        (out, lse), vjp = jax.vjp(attention, q, k, v)
        return (out, lse, *vjp((dout, dlse)))

    return run


def assert_same(got, want, tol=2e-5):
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol, err_msg=name)


# --- batch and heads: local on every shard, no collective -------------------------------------

BATCH_HEADS = [
    # (mesh, query shape, heads_kv, spec of [B, *S, H, D], NA arguments)
    pytest.param((4, "b", 2, "h"), (4, 24, 4, 8), 2, P("b", None, "h", None),
                 dict(kernel_size=5, dilation=2, stride=2, is_causal=True), id="1d-dilation-stride-causal"),
    pytest.param((2, "b", 4, "h"), (2, 8, 10, 8, 8), 4, P("b", None, None, "h", None),
                 dict(kernel_size=(3, 4), dilation=(2, 1), stride=(1, 2), is_causal=(False, True)), id="2d-gqa"),
    pytest.param((2, "b", 4, "h"), (8, 4, 6, 5, 2, 4), 2, P(("b", "h"), None, None, None, None, None),
                 dict(kernel_size=(2, 3, 3), dilation=(1, 2, 1), stride=(2, 1, 3), is_causal=(True, False, False)),
                 id="3d-batch-over-both-axes"),
]


def public_api(kw):
    return lambda q, k, v: jax_na.neighborhood_attention(q, k, v, return_lse=True, **kw)


def primitive(kw):
    def run(q, k, v):
        params = make_params(q, k, v, kw["kernel_size"], kw.get("stride", 1), kw.get("dilation", 1),
                             kw.get("is_causal", False))
        return na_with_lse(q, k, v, params, backends.AUTO)

    return run


def run_sharded(mesh_shape, shape, heads_kv, spec, kw, make=public_api, vmapped=False, kv_spec=None):
    """Sharded vs one-device (out, lse, dq, dk, dv); returns the compiled sharded HLO text."""
    m = mesh(*mesh_shape)
    args, _ = inputs(shape, heads_kv)
    fn = with_grads(make(kw))
    if vmapped:
        fn = jax.vmap(fn)
    x, kv = NamedSharding(m, spec), NamedSharding(m, kv_spec or spec)
    row = NamedSharding(m, P(*tuple(spec)[:-1]))
    sharded = jax.jit(fn, in_shardings=(x, kv, kv, x, row)).lower(*args).compile()
    got, want = sharded(*args), jax.jit(fn)(*args)
    assert_same(got, want)
    assert got[0].sharding.is_equivalent_to(x, len(got[0].shape)), got[0].sharding
    return sharded.as_text()


def check_local(*args, **kw):
    hlo = run_sharded(*args, **kw)
    assert collectives(hlo) == [], collectives(hlo)
    return hlo


@pytest.mark.parametrize("mesh_shape, shape, heads_kv, spec, kw", BATCH_HEADS)
def test_batch_heads_local(mesh_shape, shape, heads_kv, spec, kw):
    hlo = check_local(mesh_shape, shape, heads_kv, spec, kw)
    if "cpu" in jax_na.available_families():  # each shard runs the native kernel itself
        assert 'custom_call_target="jax_na_fwd_cpu"' in hlo and 'custom_call_target="jax_na_bwd_cpu"' in hlo


def test_xla_fallback_local(monkeypatch):
    """The primitives under custom_partitioning when they lower to the XLA fallback (no kernel)."""
    monkeypatch.setattr(backends, "family_for", lambda *args: None)
    hlo = check_local(*BATCH_HEADS[1].values, make=primitive)
    assert "jax_na_fwd_" not in hlo and "jax_na_bwd_" not in hlo


def test_vmap_keeps_sharding():
    """vmap folds into batch batch-major, so a sharded batch stays sharded: still no collective."""
    kw = dict(kernel_size=3, dilation=2)
    check_local((2, "b", 4, "h"), (2, 2, 6, 4, 8), 4, P(None, "b", None, "h", None), kw, vmapped=True)


@pytest.mark.parametrize("heads_kv", [2, 1])
def test_more_head_shards_than_kv_heads(heads_kv):
    """4 head shards, 2 kv heads (or MQA): kv stays replicated, each shard picks its kv head.
    The forward needs no collective; the backward only all-reduces dk and dv over a group."""
    hlo = run_sharded((2, "b", 4, "h"), (2, 12, 8, 8), heads_kv, P("b", None, "h", None), dict(kernel_size=3),
                      kv_spec=P("b", None, None, None))
    found = collectives(hlo)
    assert found and {op for op, _ in found} == {"all-reduce"}, found
    assert {s for _, shapes in found for s in shapes} == {(1, 12, heads_kv, 8)}, found


def test_unsupported_layouts_still_exact():
    """Heads that can't split with GQA (12 heads, 6 kv heads, 4 shards) and spatial sharding
    through the plain op: the partitioner gathers, the answer stays exact."""
    run_sharded((2, "b", 4, "h"), (2, 12, 12, 8), 6, P("b", None, "h", None), dict(kernel_size=3),
                kv_spec=P("b", None, None, None))
    run_sharded((8, "x"), (2, 16, 2, 8), 2, P(None, "x", None, None), dict(kernel_size=3))


# --- spatial parallelism: halo exchange --------------------------------------------------------

SPATIAL = [
    # (mesh, query shape, heads_kv, layout, NA arguments, additional tokens)
    pytest.param((8, "x"), (2, 32, 2, 8), 2, dict(spatial_axes="x"), dict(kernel_size=5), 0, id="1d"),
    pytest.param((4, "x", 2, "h"), (1, 24, 4, 8), 2, dict(spatial_axes="x", heads_axis="h"),
                 dict(kernel_size=3, dilation=2, stride=2, scale=0.3), 0, id="1d-dilation-stride-heads"),
    pytest.param((8, "x"), (1, 32, 2, 8), 1, dict(spatial_axes="x"),
                 dict(kernel_size=4, stride=2, is_causal=True), 0, id="1d-causal-one-sided"),
    pytest.param((2, "a", 4, "b"), (1, 8, 16, 2, 8), 2, dict(spatial_axes=("a", "b")),
                 dict(kernel_size=3, dilation=(1, 2), is_causal=(False, True)), 0, id="2d-both-dims"),
    pytest.param((2, "a", 2, "b", 2, "c"), (2, 4, 8, 6, 2, 4), 1,
                 dict(spatial_axes=(None, "b", "c"), batch_axis="a"),
                 dict(kernel_size=(2, 3, 3), stride=(1, 3, 1), dilation=(1, 1, 2)), 3, id="3d-batch-extra-kv"),
]


def expected_permutes(q, k, m, layout, kw):
    """Shapes of the halo blocks: keys and values travel together ([.., 2 * heads_kv, d])."""
    params = make_params(q, k, k, kw["kernel_size"], kw.get("stride", 1), kw.get("dilation", 1),
                         kw.get("is_causal", False))
    axes = layout["spatial_axes"]
    axes = (axes,) + (None,) * (params.rank - 1) if isinstance(axes, str) else axes
    size = lambda name: m.shape[name] if name else 1  # noqa: E731
    local = [q.shape[0] // size(layout.get("batch_axis"))]
    local += [q.shape[1 + i] // size(a) for i, a in enumerate(axes)]
    local += [2 * k.shape[-2] // size(layout.get("heads_axis")), q.shape[-1]]
    blocks, widths = set(), []
    for i, a in enumerate(axes):
        if a is None:
            continue
        left, right = halo_widths(q.shape[1 + i], m.shape[a], params.kernel_size[i], params.stride[i],
                                  params.dilation[i], params.is_causal[i])
        assert max(left, right) <= local[1 + i]
        for w in (left, right):
            if w:
                blocks.add(tuple(local[:1 + i] + [w] + local[2 + i:]))
        widths.append((left, right))
        local[1 + i] += left + right
    return blocks, widths


@pytest.mark.parametrize("mesh_shape, shape, heads_kv, layout, kw, extra", SPATIAL)
def test_spatial_parallel(mesh_shape, shape, heads_kv, layout, kw, extra):
    m = mesh(*mesh_shape)
    args, (ak, av) = inputs(shape, heads_kv, extra=extra)
    common = dict(additional_keys=ak, additional_values=av, return_lse=True, **kw)
    sharded = jax.jit(with_grads(lambda q, k, v: spatial_parallel(q, k, v, mesh=m, **layout, **common)))
    sharded = sharded.lower(*args).compile()
    plain = jax.jit(with_grads(lambda q, k, v: jax_na.neighborhood_attention(q, k, v, **common)))
    assert_same(sharded(*args), plain(*args))

    found = collectives(sharded.as_text())
    assert {op for op, _ in found} == {"collective-permute"}, found
    blocks, widths = expected_permutes(args[0], args[1], m, layout, kw)
    assert {s for _, shapes in found for s in shapes} == blocks, (found, widths)
    if kw.get("is_causal") is True:
        assert all(right == 0 for _, right in widths)  # causal: keys come from the left only


# --- inside shard_map: the primitives keep the manual-axis types (gradients type-check) ----------

def test_grad_inside_shard_map():
    m = mesh(4, "b")
    (q, k, v, _, _), _ = inputs((4, 8, 10, 2, 8), 2)
    w = jnp.float32(1.3)  # replicated: its gradient needs a psum, the NA inputs vary over "b"

    def local_loss(q, k, v, w):
        return jax.lax.psum(jnp.sum(jax_na.na2d(q * w, k, v, 3, dilation=(2, 1)) ** 2), "b")

    sharded = jax.shard_map(local_loss, mesh=m, in_specs=(P("b"), P("b"), P("b"), P()), out_specs=P())
    got = jax.jit(jax.grad(sharded, argnums=(0, 1, 2, 3)))(q, k, v, w)
    want = jax.jit(jax.grad(lambda q, k, v, w: jnp.sum(jax_na.na2d(q * w, k, v, 3, dilation=(2, 1)) ** 2),
                            argnums=(0, 1, 2, 3)))(q, k, v, w)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)
