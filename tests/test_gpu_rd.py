"""cuda-hopper's backward that forms delta in its dQ kernel (RD: cuda/hopper/row_delta.h).

The lowering sends cuda-hopper's backward to the RD handler (jax_na_bwd_cuda_hopper_rd, which
takes out and dlse) where the native rule cuda/hopper/rd_rule.h says it pays, and everywhere else
to jax_na_bwd_cuda_hopper with XLA's delta. Here: the rule itself and the backward primitive's
lowering for CUDA (no GPU needed: JAX lowers for a platform it does not run); on an sm_90 GPU,
which target a gradient lowers to, and RD's gradients of a loss that uses both out and lse
against the reference, through backend="cuda-hopper" and backend=None.
"""

from __future__ import annotations

import dataclasses
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_na import _native, tuning
from jax_na.params import NAParams, make_params
from jax_na.primitives import na_bwd_p

from . import problems as P
from .test_gpu import _check

RD, OLD = _native.HOPPER_RD_TARGET, _native.target_name("bwd", "cuda-hopper")
C = P.problem
# RD problems (the rule picks them: 2-D, head_dim 32, no dilation or stride, window <= 81).
RD_CASES = {
    "2d-v1-like": C((56, 56), 7, batch=2, heads=2, head_dim=32),
    "2d-causal-gqa": C((21, 19), (5, 9), is_causal=(True, False), heads=4, heads_kv=2, head_dim=32),
    "2d-odd-extents": C((13, 17), (3, 5), heads=2, head_dim=32),
}
# Problems the rule leaves on XLA's delta: V1 with dilation, a larger window, head_dim 64, stride,
# 3-D and 1-D.
OLD_CASES = {
    "2d-dilation": C((56, 56), 7, dilation=8, head_dim=32),
    "2d-window-121": C((30, 30), 11, head_dim=32),
    "2d-head-dim-64": C((20, 20), 7, head_dim=64),
    "2d-stride": C((20, 20), 7, stride=2, head_dim=32),
    "3d": C((6, 7, 9), 3, head_dim=32),
    "1d": C((300,), 9, head_dim=32),
}


def _pays(q_shape, heads_kv, kernel_size, stride=None, dilation=None, is_causal=None):
    rank = len(kernel_size)
    return _native._ext.hopper_rd_pays(
        list(q_shape), heads_kv, list(kernel_size), list(stride or (1,) * rank),
        list(dilation or (1,) * rank), list(is_causal or (0,) * rank))


@pytest.mark.skipif(_native._ext is None, reason="the native extension did not import")
def test_rule():
    """The rule: 2-D, head_dim 32, no dilation, no stride, at most 81 keys a window."""
    v1 = (128, 56, 56, 2, 32)
    assert _pays(v1, 2, (7, 7))
    assert not _pays(v1, 2, (7, 7), dilation=(8, 8))  # V2
    assert not _pays((1, 32768, 1, 128), 1, (2048,))  # A1
    assert not _pays((1, 56, 56, 2, 64), 2, (7, 7))
    assert not _pays(v1, 2, (7, 7), stride=(1, 2))
    assert _pays(v1, 2, (9, 9)) and not _pays(v1, 2, (9, 10))
    assert _pays((2, 9, 10, 4, 32), 2, (3, 5), is_causal=(1, 0))
    assert not _pays((2, 9, 10, 11, 4, 32), 2, (3, 3, 3))  # 3-D: measured a loss
    assert not _pays((1, 500, 4, 32), 4, (9,))  # 1-D: not measured
    with pytest.raises(ValueError, match="one kernel size, stride, dilation, causal flag"):
        _pays(v1, 2, (7,))


def test_rule_through_native_module():
    """_native.hopper_rd_pays (what the lowering asks) reads the same rule, where RD is built."""
    params = NAParams((7, 7), (1, 1), (1, 1), (False, False), 0.1)
    v1 = (128, 56, 56, 2, 32)
    assert _native.hopper_rd_pays(v1, 2, params) == (RD in _native._CUDA_TARGETS)
    assert not _native.hopper_rd_pays(v1, 2, dataclasses.replace(params, dilation=(8, 8)))


def _cuda_lowering(p, family):
    """The backward primitive of problem p, bound for `family` and lowered for CUDA: its text."""
    q = jax.ShapeDtypeStruct((p.batch, *p.spatial, p.heads, p.head_dim), P.BF16)
    kv = jax.ShapeDtypeStruct((p.batch, *p.spatial, p.heads_kv, p.head_dim), P.BF16)
    row = jax.ShapeDtypeStruct(q.shape[:-1], jnp.float32)
    params = make_params(q, kv, kv, **p.kwargs())

    def bwd(q, k, v, dout, lse, out, dlse):
        return na_bwd_p.bind(q, k, v, dout, lse, out, dlse, params=params, backend=family)

    return jax.jit(bwd).trace(q, kv, kv, q, row, q, row).lower(lowering_platforms=("cuda",)).as_text()


@pytest.mark.skipif(RD not in _native._CUDA_TARGETS, reason="jax_na built without the CUDA handlers")
def test_lowering_follows_the_rule():
    """RD problems: one custom call to RD with (q, k, v, dout, lse, out, dlse) and five results
    (dq, dk, dv, delta, flag), no reduction. Others, and other families: XLA's reduction, then the
    family's handler with (q, k, v, dout, lse, delta) and four results, as before RD."""
    for name, p in RD_CASES.items():
        text = _cuda_lowering(p, "cuda-hopper")
        assert f":5 = stablehlo.custom_call @{RD}(%arg0, %arg1, %arg2, %arg3, %arg4, %arg5, %arg6)" in text, name
        assert "stablehlo.reduce" not in text, name
    cases = [(n, p, "cuda-hopper") for n, p in OLD_CASES.items()] + [("v1-fused", RD_CASES["2d-v1-like"], "cuda-fused")]
    for name, p, family in cases:
        text = _cuda_lowering(p, family)
        target = _native.target_name("bwd", family)
        assert f":4 = stablehlo.custom_call @{target}(%arg0, %arg1, %arg2, %arg3, %arg4, %" in text, name
        assert RD not in text and "stablehlo.reduce" in text, name


def _needs_hopper():
    P.skip_unless_runs("cuda-hopper")
    if RD not in _native._CUDA_TARGETS:
        pytest.fail(f"cuda-hopper is built but {RD} is not registered")


def _inputs(name, p):
    return P.make_inputs(p, np.random.default_rng(zlib.crc32(name.encode())))


def _bwd_targets(p, backend, dtype=P.BF16):
    """The jax_na backward targets the gradient of P.loss_fn compiles to (the compiled module:
    the primitives are bound inside custom_partitioning, lowered when XLA partitions)."""
    x = _inputs("lowering", p)
    lowered = jax.jit(P._grad_fn(p, backend)).lower(*x.arrays(dtype), P.put(x.dout), P.put(x.dlse))
    text = lowered.compile().as_text()
    return {t for t in (RD, OLD) if f'custom_call_target="{t}"' in text}


@pytest.fixture
def no_tuning_cache(monkeypatch):
    """backend=None without a tuning cache: the family is auto's own choice (cuda-hopper)."""
    monkeypatch.setattr(tuning, "_entries", lambda: {})


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda-hopper", None])
def test_rule_picks_the_target(backend, no_tuning_cache):
    _needs_hopper()
    for name, p in RD_CASES.items():
        assert _bwd_targets(p, backend) == {RD}, name
    for name, p in OLD_CASES.items():
        assert _bwd_targets(p, backend) == {OLD}, name


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [P.BF16, P.F16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("backend", ["cuda-hopper", None])
@pytest.mark.parametrize("name", list(RD_CASES))
def test_rd_vs_reference(name, backend, dtype, no_tuning_cache):
    """out, lse and the gradients of <out, dout> + <lse, dlse> (dlse nonzero) against the
    reference, through the RD handler."""
    _needs_hopper()
    p = RD_CASES[name]
    assert _bwd_targets(p, backend, dtype) == {RD}
    x = _inputs(name, p)
    got = P.run(p, x, backend, dtype)
    want = P.run(p, x, "reference", dtype)
    _check(got, want, dtype, f"{backend} RD {name} {jnp.dtype(dtype).name} [{p.short()}]")


@pytest.mark.gpu
def test_rd_is_deterministic(no_tuning_cache):
    _needs_hopper()
    p = RD_CASES["2d-causal-gqa"]
    x = _inputs("det", p)
    a, b = (P.run(p, x, "cuda-hopper", P.BF16) for _ in range(2))
    for (n, u), w in zip(a.named().items(), b.named().values()):
        assert np.array_equal(u, w), f"{n} differs between two identical runs"


@pytest.mark.gpu
def test_rd_decoder_errors_name_the_target():
    """The RD handler's own buffers: dlse, and the float32 delta result it adds before the flag."""
    _needs_hopper()
    rng = np.random.default_rng(3)
    q, k, v = (P.put(rng.standard_normal((1, 12, 2, 64)), P.BF16) for _ in range(3))
    row = P.put(np.zeros(q.shape[:-1]))
    attrs = dict(kernel_size=np.asarray([3], np.int64), stride=np.asarray([1], np.int64),
                 dilation=np.asarray([1], np.int64), is_causal=np.asarray([0], np.int64),
                 scale=np.float32(0.125))

    def call(dlse, delta_shape):
        results = tuple(jax.ShapeDtypeStruct(t.shape, t.dtype) for t in (q, k, v)) + (
            jax.ShapeDtypeStruct(delta_shape, jnp.float32), jax.ShapeDtypeStruct((3,), jnp.uint32))
        fn = jax.ffi.ffi_call(RD, results)
        return jax.block_until_ready(jax.jit(lambda *a: fn(*a, **attrs))(q, k, v, q, row, q, dlse))

    for dlse, delta_shape, what in ((P.put(np.zeros(q.shape[:-2])), row.shape, "dlse has shape"),
                                    (row, q.shape[:-2], "the delta result has shape")):
        with pytest.raises(Exception) as excinfo:
            call(dlse, delta_shape)
        msg = " ".join(str(excinfo.value).split())
        assert f"{RD}: jax_na bwd: {what}" in msg, msg
    call(row, row.shape)  # and a valid call runs

