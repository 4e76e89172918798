"""Every user error: the exception type, a message that names the argument, and raised in
Python before anything is traced or computed (also inside jax.jit, at trace time)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_na
from jax_na import _native, api, backends, reference

from . import problems as P


def arrays(spatial=(8, 9), heads=4, heads_kv=2, head_dim=8, batch=2, dtype=jnp.float32, n_extra=None):
    z = lambda *s: jnp.zeros(s, dtype)  # noqa: E731 - shapes and dtypes are all that matter here
    q = z(batch, *spatial, heads, head_dim)
    k = z(batch, *spatial, heads_kv, head_dim)
    v = z(batch, *spatial, heads_kv, head_dim)
    if n_extra is None:
        return q, k, v
    return q, k, v, z(batch, n_extra, heads_kv, head_dim), z(batch, n_extra, heads_kv, head_dim)


def _replace(base, i, x):
    return tuple(x if j == i else a for j, a in enumerate(base))


Q, K, V = arrays()
Q1, K1, V1 = arrays(spatial=(10,))
Q3, K3, V3 = arrays(spatial=(4, 5, 6))
_, _, _, AK, AV = arrays(n_extra=3)

# (id, exception type, message regex, fn, args, kwargs)
CASES = [
    # kernel_size
    ("kernel-lt-2", ValueError, r"kernel_size.*>= 2", jax_na.na2d, (Q, K, V, 1), {}),
    ("kernel-lt-2-one-dim", ValueError, r"kernel_size", jax_na.na2d, (Q, K, V, (3, 1)), {}),
    ("kernel-float", TypeError, r"kernel_size", jax_na.na2d, (Q, K, V, 3.0), {}),
    ("kernel-bool", TypeError, r"kernel_size", jax_na.na2d, (Q, K, V, True), {}),
    ("kernel-tuple-float", TypeError, r"kernel_size", jax_na.na2d, (Q, K, V, (3, 2.5)), {}),
    ("kernel-str", TypeError, r"kernel_size", jax_na.na2d, (Q, K, V, "3"), {}),
    ("kernel-tuple-too-long", ValueError, r"kernel_size.*2", jax_na.na2d, (Q, K, V, (3, 3, 3)), {}),
    ("kernel-tuple-too-short", ValueError, r"kernel_size", jax_na.na3d, (Q3, K3, V3, (3, 3)), {}),
    # kernel * dilation vs extent
    ("kernel-gt-extent", ValueError, r"kernel_size \* dilation", jax_na.na1d, (Q1, K1, V1, 11), {}),
    ("kernel-dilation-gt-extent", ValueError, r"kernel_size \* dilation.*dimension 1",
     jax_na.na2d, (Q, K, V, 3), dict(dilation=(2, 4))),
    # dilation
    ("dilation-lt-1", ValueError, r"dilation.*>= 1", jax_na.na2d, (Q, K, V, 3), dict(dilation=0)),
    ("dilation-negative", ValueError, r"dilation", jax_na.na2d, (Q, K, V, 3), dict(dilation=(1, -1))),
    ("dilation-float", TypeError, r"dilation", jax_na.na2d, (Q, K, V, 3), dict(dilation=1.5)),
    ("dilation-tuple-wrong-length", ValueError, r"dilation", jax_na.na2d, (Q, K, V, 3), dict(dilation=(1,))),
    # stride
    ("stride-lt-1", ValueError, r"stride", jax_na.na2d, (Q, K, V, 3), dict(stride=0)),
    ("stride-gt-kernel", ValueError, r"stride.*kernel_size", jax_na.na2d, (Q, K, V, 3), dict(stride=(1, 4))),
    ("stride-float", TypeError, r"stride", jax_na.na2d, (Q, K, V, 3), dict(stride=2.0)),
    ("stride-tuple-wrong-length", ValueError, r"stride", jax_na.na2d, (Q, K, V, 3), dict(stride=(1, 1, 1))),
    # is_causal
    ("causal-int", TypeError, r"is_causal", jax_na.na2d, (Q, K, V, 3), dict(is_causal=1)),
    ("causal-tuple-wrong-length", ValueError, r"is_causal", jax_na.na2d, (Q, K, V, 3), dict(is_causal=(True,))),
    ("causal-str", TypeError, r"is_causal", jax_na.na2d, (Q, K, V, 3), dict(is_causal="yes")),
    # scale
    ("scale-str", TypeError, r"scale", jax_na.na2d, (Q, K, V, 3), dict(scale="0.5")),
    ("scale-bool", TypeError, r"scale", jax_na.na2d, (Q, K, V, 3), dict(scale=True)),
    ("scale-array", TypeError, r"scale", jax_na.na2d, (Q, K, V, 3), dict(scale=jnp.ones(2))),
    ("scale-nan", ValueError, r"scale", jax_na.na2d, (Q, K, V, 3), dict(scale=float("nan"))),
    ("scale-inf", ValueError, r"scale", jax_na.na2d, (Q, K, V, 3), dict(scale=float("inf"))),
    # rank
    ("rank-too-small", ValueError, r"query", jax_na.neighborhood_attention,
     (Q[:, 0, 0], K[:, 0, 0], V[:, 0, 0], 3), {}),
    ("rank-too-large", ValueError, r"query", jax_na.neighborhood_attention,
     (Q[:, :, None, :, None], K[:, :, None, :, None], V[:, :, None, :, None], 2), {}),
    ("na1d-given-2d", ValueError, r"query.*na1d", jax_na.na1d, (Q, K, V, 3), {}),
    ("na2d-given-1d", ValueError, r"query.*na2d", jax_na.na2d, (Q1, K1, V1, 3), {}),
    ("na3d-given-2d", ValueError, r"query.*na3d", jax_na.na3d, (Q, K, V, 3), {}),
    ("na2d-given-3d", ValueError, r"query.*na2d", jax_na.na2d, (Q3, K3, V3, 3), {}),
    ("key-rank", ValueError, r"key.*rank", jax_na.na2d, (Q, K[:, 0], V, 3), {}),
    ("value-rank", ValueError, r"value", jax_na.na2d, (Q, K, V[:, 0], 3), {}),
    # shapes
    ("key-batch", ValueError, r"key.*batch", jax_na.na2d, (Q, K[:1], V, 3), {}),
    ("key-spatial", ValueError, r"key.*spatial", jax_na.na2d, (Q, K[:, :7], V, 3), {}),
    ("value-spatial", ValueError, r"value.*spatial", jax_na.na2d, (Q, K, V[:, :, :8], 3), {}),
    ("key-head-dim", ValueError, r"key head_dim", jax_na.na2d, (Q, K[..., :4], V, 3), {}),
    ("value-head-dim", ValueError, r"value head_dim", jax_na.na2d, (Q, K, V[..., :4], 3), {}),
    ("key-value-shape", ValueError, r"key and value", jax_na.na2d, (Q, K, V[:, :, :, :1], 3), {}),
    ("heads-not-multiple", ValueError, r"heads.*multiple", jax_na.na2d, (Q[..., :3, :], K, V, 3), {}),
    ("heads-kv-more-than-heads", ValueError, r"heads", jax_na.na2d, (Q[..., :1, :], K, V, 3), {}),
    # dtypes
    ("query-int32", TypeError, r"query.*int32", jax_na.na2d, (Q.astype(jnp.int32), K, V, 3), {}),
    ("all-int32", TypeError, r"query.*int32",
     jax_na.na2d, (Q.astype(jnp.int32), K.astype(jnp.int32), V.astype(jnp.int32), 3), {}),
    ("query-float64", TypeError, r"query.*float64",
     jax_na.na2d, (np.zeros(Q.shape), np.zeros(K.shape), np.zeros(V.shape), 3), {}),
    ("key-float64", TypeError, r"key.*float64", jax_na.na2d, (Q, np.zeros(K.shape), V, 3), {}),
    ("mismatched-dtypes", TypeError, r"dtype", jax_na.na2d, (Q, K.astype(jnp.float16), V, 3), {}),
    ("mismatched-dtypes-value", TypeError, r"dtype", jax_na.na2d, (Q, K, V.astype(jnp.bfloat16), 3), {}),
    # additional keys / values
    ("only-additional-keys", ValueError, r"additional_keys and additional_values",
     jax_na.na2d, (Q, K, V, 3), dict(additional_keys=AK)),
    ("only-additional-values", ValueError, r"additional_keys and additional_values",
     jax_na.na2d, (Q, K, V, 3), dict(additional_values=AV)),
    ("additional-keys-batch", ValueError, r"additional_keys.*shape",
     jax_na.na2d, (Q, K, V, 3), dict(additional_keys=AK[:1], additional_values=AV)),
    ("additional-values-heads", ValueError, r"additional_values.*shape",
     jax_na.na2d, (Q, K, V, 3), dict(additional_keys=AK, additional_values=jnp.zeros((2, 3, 4, 8)))),
    ("additional-keys-head-dim", ValueError, r"additional_keys.*shape",
     jax_na.na2d, (Q, K, V, 3), dict(additional_keys=AK[..., :4], additional_values=AV)),
    ("additional-keys-rank", ValueError, r"additional_keys.*shape",
     jax_na.na2d, (Q, K, V, 3), dict(additional_keys=AK[:, 0], additional_values=AV)),
    ("additional-keys-spatial-layout", ValueError, r"additional_keys.*shape",
     jax_na.na2d, (Q, K, V, 3), dict(additional_keys=K, additional_values=V)),
    ("additional-different-lengths", ValueError, r"additional_keys and additional_values.*same shape",
     jax_na.na2d, (Q, K, V, 3), dict(additional_keys=AK, additional_values=AV[:, :2])),
    ("additional-dtype", TypeError, r"additional_keys.*dtype",
     jax_na.na2d, (Q, K, V, 3), dict(additional_keys=AK.astype(jnp.float16), additional_values=AV)),
    ("additional-values-float64", TypeError, r"additional_values.*float64",
     jax_na.na2d, (Q, K, V, 3), dict(additional_keys=AK, additional_values=np.zeros(AV.shape))),
    # backend
    ("unknown-backend", ValueError, r"backend.*'natten'", jax_na.na2d, (Q, K, V, 3), dict(backend="natten")),
    ("backend-wrong-type", ValueError, r"backend", jax_na.na2d, (Q, K, V, 3), dict(backend=1)),
]

UNAVAILABLE = [b for b in jax_na.BACKENDS if b != "reference" and b not in jax_na.available_families()]
CASES += [(f"unavailable-{b}", ValueError, rf"backend '{b}' is not available", jax_na.na2d, (Q, K, V, 3),
           dict(backend=b)) for b in UNAVAILABLE]


@pytest.fixture
def nothing_runs(monkeypatch):
    """Make every path past validation fail loudly: the reference function, the custom_vjp
    wrapper and the primitives' lowering. An error raised under this fixture with the expected
    type and message was raised before any of them."""
    def boom(*a, **k):
        raise AssertionError("validation let the call reach the computation")

    monkeypatch.setattr(reference, "na_reference", boom)
    monkeypatch.setattr(api, "na_with_lse", boom)
    monkeypatch.setattr(backends, "family_for", boom)


@pytest.mark.parametrize("exc,match,fn,args,kwargs", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_eager(nothing_runs, exc, match, fn, args, kwargs):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("exc,match,fn,args,kwargs", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_at_trace_time_under_jit(nothing_runs, exc, match, fn, args, kwargs):
    """The same error from inside jax.jit, where the arrays are tracers."""
    arrays_ = dict(args=list(args[:3]), kw={k: v for k, v in kwargs.items() if k.startswith("additional")})
    statics = dict(rest=args[3:], kw={k: v for k, v in kwargs.items() if not k.startswith("additional")})
    if not all(hasattr(a, "dtype") for a in arrays_["args"]):
        pytest.skip("arguments are not all arrays")
    if any(isinstance(a, np.ndarray) and a.dtype == np.float64 for a in list(arrays_["args"]) + list(arrays_["kw"].values())):
        pytest.skip("float64 does not reach jit without jax_enable_x64 (it is canonicalised to float32)")

    @jax.jit
    def f(arr):
        return fn(*arr["args"], *statics["rest"], **arr["kw"], **statics["kw"])

    with pytest.raises(exc, match=match):
        f(arrays_)


def test_valid_call_passes_the_guard():
    """The guard of nothing_runs really fires for a valid call (so the tests above can fail)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reference, "na_reference", lambda *a, **k: (_ for _ in ()).throw(AssertionError("reached")))
        with pytest.raises(AssertionError, match="reached"):
            jax_na.na2d(Q, K, V, 3, backend="reference")


def test_error_names_the_rule_values():
    with pytest.raises(ValueError, match=r"3 \* 4 > 9"):
        jax_na.na2d(Q, K, V, 3, dilation=(1, 4))
    with pytest.raises(ValueError, match=r"query heads \(3\).*key/value heads \(2\)"):
        jax_na.na2d(Q[..., :3, :], K, V, 3)


@pytest.mark.parametrize("backend", [pytest.param("reference", id="reference")] + P.api_backends())
def test_valid_edge_arguments_accepted(backend):
    """The boundaries of each rule are legal: k = 2, k * d = L, s = k, numpy ints and bools,
    lists, heads_kv = 1, a numpy float scale."""
    q, k, v = arrays(spatial=(8, 9), heads=4, heads_kv=1)
    with P.backend_context(backend):
        out = jax_na.na2d(q, k, v, [2, np.int64(3)], stride=(2, 3), dilation=(4, 3),
                          is_causal=(np.bool_(True), False), scale=np.float32(0.5), backend=backend)
    assert out.shape == q.shape and out.dtype == q.dtype


BUILT_CUDA = [f for f in _native.CUDA_FAMILIES if _native.has_family(f)]


@pytest.mark.skipif(P.has_gpu() or not BUILT_CUDA, reason="needs CUDA families built and no GPU visible")
@pytest.mark.parametrize("backend", BUILT_CUDA)
def test_cuda_backend_without_gpu_raises(backend):
    """A built CUDA family asked for where JAX sees no GPU: a ValueError naming it, not a crash."""
    assert backend not in jax_na.available_families()
    with pytest.raises(ValueError, match=rf"backend '{backend}' is not available: JAX sees no CUDA device"):
        jax.jit(lambda q, k, v: jax_na.na2d(q, k, v, 3, backend=backend))(Q, K, V)


def test_merge_attentions_errors():
    o = jnp.zeros((2, 5, 3, 4))
    l = jnp.zeros((2, 5, 3))
    with pytest.raises(ValueError, match="outputs and lses"):
        jax_na.merge_attentions([o, o], [l])
    with pytest.raises(ValueError, match="outputs and lses"):
        jax_na.merge_attentions([], [])
    with pytest.raises(ValueError, match=r"outputs\[1\]"):
        jax_na.merge_attentions([o, o[:, :4]], [l, l[:, :4]])
    with pytest.raises(ValueError, match=r"lses\[1\]"):
        jax_na.merge_attentions([o, o], [l, l[..., :2]])
