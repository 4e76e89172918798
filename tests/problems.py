"""Random neighborhood-attention problems and the ways tests run them.

A `Problem` is the static description of one call (shapes and per-dimension parameters);
`random_problem` draws one that satisfies the rules of ../shared/na-semantics.md from a seeded
numpy Generator; `make_inputs` draws fresh randn inputs for it; `run` evaluates out, lse and the
gradients of a loss that uses both out and lse, through one backend; `run_oracle` does the same
with the float64 numpy oracle.

Backends under test:
  "reference"     the pure-JAX function (jax_na.reference), JAX differentiates it;
  None            the public default (today "reference" when no native family is built,
                  the native CPU family once it is);
  "xla-fallback"  the primitives + custom_vjp path with every platform lowered to the XLA
                  fallback (forced here, see `xla_fallback`), i.e. what backend=None runs on a
                  platform without a native family;
  "cpu"           the native C++ FFI family (skipped when it is not built).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import zlib
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_na
from jax_na import _native
from jax_na import backends as _backends

from . import oracle

F32, F16, BF16 = jnp.float32, jnp.float16, jnp.bfloat16

XLA_FALLBACK = "xla-fallback"

# Relative (Frobenius) tolerances against reference on the same inputs.
TOL = {jnp.dtype(F32): 1e-5, jnp.dtype(F16): 3e-3, jnp.dtype(BF16): 2e-2}
# float32 reference against the float64 oracle.
ORACLE_TOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Problem:
    spatial: tuple
    kernel_size: tuple
    stride: tuple
    dilation: tuple
    is_causal: tuple
    batch: int = 1
    heads: int = 2
    heads_kv: int = 2
    head_dim: int = 8
    n_extra: int = 0  # additional KV tokens; 0 = none
    scale: Optional[float] = None

    @property
    def rank(self) -> int:
        return len(self.spatial)

    @property
    def resolved_scale(self) -> float:
        return float(self.head_dim) ** -0.5 if self.scale is None else float(self.scale)

    def kwargs(self) -> dict:
        """Keyword arguments of jax_na.neighborhood_attention (besides the arrays)."""
        return dict(kernel_size=self.kernel_size, stride=self.stride, dilation=self.dilation,
                    is_causal=self.is_causal, scale=self.scale)

    def oracle_cfg(self) -> dict:
        return dict(kernel_size=self.kernel_size, stride=self.stride, dilation=self.dilation,
                    is_causal=self.is_causal, scale=self.resolved_scale)

    def short(self) -> str:
        return (f"sp={self.spatial} k={self.kernel_size} s={self.stride} d={self.dilation} "
                f"c={tuple(int(c) for c in self.is_causal)} B={self.batch} H={self.heads}/{self.heads_kv} "
                f"D={self.head_dim} extra={self.n_extra} scale={self.scale}")


def problem(spatial, kernel_size, stride=1, dilation=1, is_causal=False, **kw) -> Problem:
    """A Problem from int-or-tuple arguments (ints broadcast over the spatial dims)."""
    spatial = tuple(spatial)
    r = len(spatial)

    def per_dim(x, kind):
        return tuple(kind(v) for v in x) if isinstance(x, (tuple, list)) else (kind(x),) * r

    return Problem(spatial, per_dim(kernel_size, int), per_dim(stride, int), per_dim(dilation, int),
                   per_dim(is_causal, bool), **kw)


# Largest extent per dimension, by rank, so that N stays small and cases stay fast.
_MAX_EXTENT = {1: 24, 2: 10, 3: 6}


def random_problem(rng: np.random.Generator, rank: Optional[int] = None, *, extra: Optional[bool] = None,
                   causal: Optional[bool] = None, head_dims=(4, 8, 16, 5, 32, 64)) -> Problem:
    """A random valid problem. Per dimension: kernel 2..7, dilation 1..3 with k*d <= L (and
    sometimes k*d == L or k == L exactly), stride 1..k, causal or not; GQA/MQA heads; optional
    additional KV; optional custom scale."""
    rank = int(rng.integers(1, 4)) if rank is None else rank
    max_l = _MAX_EXTENT[rank]
    spatial, ks, ds, ss, cs = [], [], [], [], []
    for _ in range(rank):
        k = int(rng.integers(2, min(7, max_l) + 1))
        d = int(rng.integers(1, max(1, max_l // k) + 1))
        d = min(d, 3)
        lo = k * d
        mode = rng.random()
        if mode < 0.15:
            length = lo  # k * d == L exactly
        elif mode < 0.25:
            d, length = 1, k  # kernel covers the whole extent
        else:
            length = int(rng.integers(lo, max(lo, max_l) + 1))
        s = int(rng.integers(1, k + 1))
        c = bool(rng.random() < 0.35) if causal is None else causal
        spatial.append(length), ks.append(k), ds.append(d), ss.append(s), cs.append(c)
    heads_kv = int(rng.choice([1, 2]))
    heads = heads_kv * int(rng.choice([1, 2, 3]))
    has_extra = bool(rng.random() < 0.25) if extra is None else extra
    return Problem(
        spatial=tuple(spatial), kernel_size=tuple(ks), stride=tuple(ss), dilation=tuple(ds), is_causal=tuple(cs),
        batch=int(rng.integers(1, 3)), heads=heads, heads_kv=heads_kv, head_dim=int(rng.choice(head_dims)),
        n_extra=int(rng.integers(1, 6)) if has_extra else 0,
        scale=None if rng.random() < 0.5 else float(rng.uniform(0.05, 1.5)),
    )


def put(x, dtype=F32):
    """A numpy array on the device as `dtype`. (jnp.asarray compiles a small program per new
    shape in this JAX; numpy casting and device_put compile nothing.)"""
    return jax.device_put(np.asarray(x).astype(jnp.dtype(dtype)))


@dataclasses.dataclass
class Inputs:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    ak: Optional[np.ndarray]
    av: Optional[np.ndarray]
    dout: np.ndarray  # cotangent of out (float32)
    dlse: np.ndarray  # cotangent of lse (float32)

    def arrays(self, dtype):
        """(q, k, v, ak, av) as jax arrays of `dtype` (ak/av None when absent)."""
        cast = lambda x: None if x is None else put(x, dtype)  # noqa: E731
        return cast(self.q), cast(self.k), cast(self.v), cast(self.ak), cast(self.av)

    def rounded(self, dtype) -> "Inputs":
        """The same inputs rounded to `dtype` and back to float32 (what a low-precision run sees)."""
        r = lambda x: None if x is None else np.asarray(x).astype(jnp.dtype(dtype)).astype(np.float32)  # noqa: E731
        return Inputs(r(self.q), r(self.k), r(self.v), r(self.ak), r(self.av), self.dout, self.dlse)


def make_inputs(p: Problem, rng: np.random.Generator) -> Inputs:
    """Fresh standard-normal inputs and loss cotangents (float32 numpy)."""
    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    q = randn(p.batch, *p.spatial, p.heads, p.head_dim)
    k = randn(p.batch, *p.spatial, p.heads_kv, p.head_dim)
    v = randn(p.batch, *p.spatial, p.heads_kv, p.head_dim)
    ak = randn(p.batch, p.n_extra, p.heads_kv, p.head_dim) if p.n_extra else None
    av = randn(p.batch, p.n_extra, p.heads_kv, p.head_dim) if p.n_extra else None
    return Inputs(q, k, v, ak, av, randn(*q.shape), randn(*q.shape[:-1]))


# --- backends --------------------------------------------------------------------------------

def has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def skip_unless_runs(family: str) -> None:
    """Skip the calling test unless `family` is built and runs on this machine's device."""
    if not _native.runs_here(family) or family not in jax_na.available_families():
        pytest.skip(f"{family} does not run here (not built, or not for this device)")


def native_backends() -> list:
    """pytest params for the native families of this platform: built ones run, others skip."""
    built = jax_na.available_families()
    return [pytest.param("cpu", marks=pytest.mark.skipif(
        "cpu" not in built, reason="native CPU family not built (jax_na.available_families() lacks 'cpu')"))]


def api_backends() -> list:
    """Every way to run the primitives/public API on this machine, besides 'reference' itself."""
    return [pytest.param(None, id="None"), pytest.param(XLA_FALLBACK, id=XLA_FALLBACK)] + native_backends()


@contextlib.contextmanager
def xla_fallback():
    """Makes backend="xla-fallback" mean: the primitives, lowered to the XLA fallback on every
    platform. Only that name is affected; the patch must be active while a call is traced and
    lowered (run() does both inside it)."""
    orig_resolve, orig_family_for = _backends.resolve, _backends.family_for

    def resolve(backend):
        return XLA_FALLBACK if backend == XLA_FALLBACK else orig_resolve(backend)

    def family_for(platform, backend, *args):
        return None if backend == XLA_FALLBACK else orig_family_for(platform, backend, *args)

    _backends.resolve, _backends.family_for = resolve, family_for
    try:
        yield
    finally:
        _backends.resolve, _backends.family_for = orig_resolve, orig_family_for


def backend_context(backend):
    return xla_fallback() if backend == XLA_FALLBACK else contextlib.nullcontext()


def attention_fn(p: Problem, backend, return_lse=True):
    """f(q, k, v, ak, av) -> jax_na.neighborhood_attention(...) for problem p."""
    kw = p.kwargs()

    def f(q, k, v, ak=None, av=None):
        return jax_na.neighborhood_attention(q, k, v, **kw, additional_keys=ak, additional_values=av,
                                             return_lse=return_lse, backend=backend)

    return f


def loss_fn(p: Problem, backend):
    """loss(q, k, v, ak, av, dout, dlse) = <out, dout> + <lse, dlse>, with (out, lse) as aux."""
    f = attention_fn(p, backend)

    def loss(q, k, v, ak, av, dout, dlse):
        out, lse = f(q, k, v, ak, av)
        return jnp.sum(out.astype(F32) * dout) + jnp.sum(lse * dlse), (out, lse)

    return loss


@dataclasses.dataclass
class Result:
    out: np.ndarray
    lse: np.ndarray
    grads: tuple  # (dq, dk, dv[, dak, dav]) as float64 numpy

    def named(self):
        names = ("out", "lse", "dq", "dk", "dv", "dak", "dav")
        return dict(zip(names, (self.out, self.lse) + tuple(self.grads)))


def run(p: Problem, x: Inputs, backend, dtype=F32, grads=True) -> Result:
    """Out, lse and (optionally) the gradients of loss_fn through `backend`, jitted."""
    q, k, v, ak, av = x.arrays(dtype)
    with backend_context(backend):
        if grads:
            fn = jax.jit(_grad_fn(p, backend))
            g, (out, lse) = fn(q, k, v, ak, av, put(x.dout), put(x.dlse))
        else:
            out, lse = jax.jit(attention_fn(p, backend))(q, k, v, ak, av)
            g = ()
        jax.block_until_ready((out, lse, g))
    return _to_result(q.shape, dtype, g, out, lse)


def _grad_fn(p: Problem, backend):
    argnums = (0, 1, 2, 3, 4) if p.n_extra else (0, 1, 2)
    return jax.grad(loss_fn(p, backend), argnums=argnums, has_aux=True)


def _to_result(q_shape, dtype, g, out, lse) -> Result:
    assert out.dtype == jnp.dtype(dtype) and out.shape == q_shape, (out.dtype, out.shape)
    assert lse.dtype == jnp.float32 and lse.shape == q_shape[:-1], (lse.dtype, lse.shape)
    f64 = lambda t: np.asarray(t).astype(np.float64)  # noqa: E731 - numpy casts: nothing to compile
    return Result(f64(out), f64(lse), tuple(f64(t) for t in g))


def run_many(cases, backend, dtype=F32, chunk=8) -> list:
    """run() of many (Problem, Inputs) cases, `chunk` cases per jit (compiling one program per
    case dominates the cost of small cases). Returns one Result, or the exception that case
    raised, per case: a chunk that fails is rerun case by case to say which."""
    results = []
    for start in range(0, len(cases), chunk):
        part = cases[start:start + chunk]
        fns = [_grad_fn(p, backend) for p, _ in part]
        args = [x.arrays(dtype) + (put(x.dout), put(x.dlse)) for _, x in part]
        try:
            with backend_context(backend):
                outs = jax.block_until_ready(jax.jit(lambda a: [f(*aa) for f, aa in zip(fns, a)])(args))
            results += [_to_result(a[0].shape, dtype, g, out, lse) for a, (g, (out, lse)) in zip(args, outs)]
        except Exception:  # attribute the failure to its case(s)
            for (p, x) in part:
                try:
                    results.append(run(p, x, backend, dtype))
                except Exception as e:  # noqa: BLE001 - reported by the caller
                    results.append(e)
    return results


def run_oracle(p: Problem, x: Inputs, grads=True) -> Result:
    cfg = p.oracle_cfg()
    out, lse = oracle.attention(x.q, x.k, x.v, cfg, x.ak, x.av)
    g = ()
    if grads:
        g = oracle.attention_vjp(x.q, x.k, x.v, cfg, x.dout, x.dlse, x.ak, x.av)
        g = tuple(t for t in g if t is not None)
    return Result(out, lse, g)


# --- comparison ------------------------------------------------------------------------------

def rel_err(a, b) -> float:
    """||a - b|| / ||b|| (Frobenius, float64); ||a|| when b is all zeros."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if not np.all(np.isfinite(a)):
        return float("inf")
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / nb) if nb > 0 else float(np.linalg.norm(a))


def compare(got: Result, want: Result, tol: float) -> dict:
    """{name: relative error} for every quantity above tol (empty when all match)."""
    bad = {}
    g, w = got.named(), want.named()
    assert set(g) == set(w), (set(g), set(w))
    for name in w:
        e = rel_err(g[name], w[name])
        if not e <= tol:
            bad[name] = e
    return bad


def assert_close(got: Result, want: Result, tol: float, what=""):
    bad = compare(got, want, tol)
    assert not bad, f"{what}: relative errors above {tol:g}: {bad}"


# --- named feature cases ---------------------------------------------------------------------

FEATURE_CASES = {
    "1d-odd-k": problem((13,), 5),
    "1d-even-k": problem((12,), 4),
    "1d-dilation-uneven-groups": problem((17,), 3, dilation=4),
    "1d-stride3": problem((15,), 5, stride=3),
    "1d-even-stride": problem((14,), 6, stride=4),
    "1d-stride-eq-k": problem((11,), 4, stride=4),
    "1d-causal": problem((12,), 4, is_causal=True),
    "1d-causal-stride-dilation": problem((19,), 3, stride=2, dilation=3, is_causal=True),
    "1d-kernel-eq-extent": problem((7,), 7),
    "1d-kd-eq-extent": problem((12,), 3, dilation=4),
    "2d-mixed": problem((7, 9), (3, 4), stride=(2, 1), dilation=(2, 1), is_causal=(True, False)),
    "2d-causal-both": problem((6, 7), (3, 2), stride=(1, 2), is_causal=True),
    "2d-kernel-eq-extent": problem((4, 5), (4, 5)),
    "3d-mixed": problem((4, 5, 6), (2, 3, 4), stride=(1, 2, 3), dilation=(2, 1, 1), is_causal=(False, True, False)),
    "3d-causal-all": problem((4, 4, 5), 2, stride=(2, 1, 2), is_causal=True),
    "gqa": problem((9, 8), 3, heads=6, heads_kv=2),
    "mqa": problem((16,), 5, dilation=2, heads=4, heads_kv=1),
    "extra-kv": problem((8, 6), 3, n_extra=3),
    "extra-kv-causal": problem((13,), 4, is_causal=True, n_extra=4, heads=4, heads_kv=2),
    "custom-scale": problem((10,), 3, scale=0.9),
    "3d-causal-extra-scale": problem((3, 4, 5), (3, 2, 2), is_causal=(True, False, True), n_extra=2, scale=0.3),
    "batch2-odd-head-dim": problem((9,), 4, stride=2, batch=2, head_dim=5),
}


def feature_params():
    return [pytest.param(p, id=name) for name, p in FEATURE_CASES.items()]


def stable_seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


@functools.lru_cache(maxsize=None)
def feature_cases(dtype_name: str = "float32") -> tuple:
    """((name, Problem, Inputs), ...) for FEATURE_CASES, inputs drawn from a per-name seed."""
    return tuple((name, p, make_inputs(p, np.random.default_rng(stable_seed(name, dtype_name))))
                 for name, p in FEATURE_CASES.items())


@functools.lru_cache(maxsize=None)
def reference_feature_results(dtype_name: str = "float32") -> tuple:
    """backend="reference" on feature_cases(dtype), computed once per test session."""
    cases = [(p, x) for _, p, x in feature_cases(dtype_name)]
    return tuple(run_many(cases, "reference", jnp.dtype(dtype_name)))


def random_cases(seed: int, n: int, **kw):
    """n (Problem, Inputs) pairs from one seeded Generator (fresh randn inputs per case)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        p = random_problem(rng, **kw)
        out.append((p, make_inputs(p, rng)))
    return out


# --- feature coverage ------------------------------------------------------------------------

ALL_FEATURES = frozenset({
    "rank1", "rank2", "rank3", "odd-kernel", "even-kernel", "dilation", "odd-stride", "even-stride",
    "stride-eq-kernel", "causal-all", "causal-mixed", "non-causal", "kernel-eq-extent", "kd-eq-extent",
    "uneven-dilation-groups", "gqa", "mqa", "mha", "extra-kv", "extra-kv-causal", "custom-scale",
    "default-scale", "batch>1",
})


def features_of(p: Problem) -> set:
    f = {f"rank{p.rank}"}
    for L, k, s, d, c in zip(p.spatial, p.kernel_size, p.stride, p.dilation, p.is_causal):
        f.add("odd-kernel" if k % 2 else "even-kernel")
        if d > 1:
            f.add("dilation")
            if L % d:
                f.add("uneven-dilation-groups")
        if s > 1:
            f.add("odd-stride" if s % 2 else "even-stride")
        if s == k:
            f.add("stride-eq-kernel")
        if k == L:
            f.add("kernel-eq-extent")
        if k * d == L:
            f.add("kd-eq-extent")
    f.add("causal-all" if all(p.is_causal) else "causal-mixed" if any(p.is_causal) else "non-causal")
    f.add("mqa" if p.heads_kv == 1 and p.heads > 1 else "gqa" if p.heads > p.heads_kv else "mha")
    if p.n_extra:
        f.add("extra-kv-causal" if any(p.is_causal) else "extra-kv")
    f.add("default-scale" if p.scale is None else "custom-scale")
    if p.batch > 1:
        f.add("batch>1")
    return f


def failures(cases, got, want, tol) -> list:
    """Human-readable lines for the cases where got differs from want by more than tol
    (relative), or raised."""
    lines = []
    for i, ((p, _), g, w) in enumerate(zip(cases, got, want)):
        if isinstance(w, Exception):
            raise w
        if isinstance(g, Exception):
            lines.append(f"case {i} [{p.short()}]: raised {type(g).__name__}: {g}")
            continue
        bad = compare(g, w, tol)
        if bad:
            lines.append(f"case {i} [{p.short()}]: " + ", ".join(f"{k} {v:.2e}" for k, v in bad.items()))
    return lines
