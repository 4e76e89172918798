"""Hardening of the CUDA families (issue 8, items 3-7): 64-bit indexing, command buffers,
determinism of the backward, native errors reaching Python. The CPU parts are in
test_hardening.py; compute-sanitizer (item 2) is scripts/sanitize.sh.

Every CUDA family jax_na.available_families() reports is tested (cuda-naive, cuda-gemm,
cuda-fused, and any cuda-* family added later); tests marked `gpu` skip with a reason where JAX
sees no GPU. One test needs no GPU: the handlers' command-buffer trait (read from the compiled
handlers through XLA's FFI metadata call, in a subprocess).

- 64-bit indexing (JAX_NA_TEST_LARGE=1 to run; ~36 GB of GPU memory, about 15 s per family):
  bf16 1-D, B=2, L=1,050,629, H=8 (kv heads 8), D=128, kernel 7, dilation 3: q, k, v, out, dq,
  dk, dv each hold 2,151,688,192 > 2^31 elements. Per family (fresh inputs each, so a stale
  buffer of an earlier family cannot pass): every output element against backend="reference"
  (float32) in chunks with halos, and sampled rows (the first, those around element 2^31, the
  last) against a float64 numpy computation on those rows' neighbourhoods only (neighbours from
  tests/oracle.py, independent of jax_na).
- Command buffers: fwd + bwd compiled with XLA command buffers on for custom calls
  (compiler_options, and XLA_FLAGS in a subprocess) give bitwise the results of plain launches,
  on two input sets and a replay; the handlers ran under stream capture (the extension counts
  handler calls made while XLA records a CUDA graph), and not with command buffers off.
- Determinism: the backward (and forward) of every family is bitwise identical over 3 runs on
  problems with many CTAs, GQA and a large window. A family listed in NONDETERMINISTIC (none
  today: no family uses atomics) has its run-to-run spread printed instead.
- Native errors: a direct FFI call (bypassing Python's routing) of a problem a family cannot run
  raises an exception naming the target and the reason; decoder errors name the CUDA target; a
  failed scratch allocation, and scratch asked for while XLA records a command buffer, raise
  errors (subprocess with JAX_NA_TEST_BWD_WORKSPACE_BYTES); after each, the process still runs a
  valid call. An unsupported GPU (no kernel image) cannot be provoked on an sm_80/sm_90 card.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_na
from jax_na import _native

from . import problems as P
from .test_gpu import FAMILIES
from .oracle import is_neighbour_1d

ROOT = pathlib.Path(__file__).resolve().parent.parent
F32, F16, BF16 = P.F32, P.F16, P.BF16
gpu = pytest.mark.gpu


def _counts():
    """(calls, captured) of the CUDA handlers, or None for a build without the counter."""
    fn = getattr(_native._ext, "cuda_call_counts", None)
    return tuple(fn()) if fn else None


def _child_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _bits(x) -> np.ndarray:
    a = np.asarray(x)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _fwd_bwd(p: P.Problem, family):
    """(q, k, v, dout, dlse) -> (out, lse, dq, dk, dv): one program, forward and backward."""
    f = P.attention_fn(p, family)

    def run(q, k, v, dout, dlse):
        (out, lse), vjp = jax.vjp(lambda q, k, v: f(q, k, v), q, k, v)
        return (out, lse) + tuple(vjp((dout, dlse)))

    return run


def _device_inputs(p: P.Problem, seed: int, dtype):
    x = P.make_inputs(p, np.random.default_rng(seed))
    q, k, v = (P.put(t, dtype) for t in (x.q, x.k, x.v))
    return q, k, v, P.put(x.dout, dtype), P.put(x.dlse)


# --- command-buffer trait (no GPU needed) ---------------------------------------------------------

TRAITS_CHILD = r'''
import ctypes as C
from jax_na import _native

class ExtBase(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("type", C.c_int), ("next", C.c_void_p)]

class ApiVersion(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("extension_start", C.c_void_p),
                ("major", C.c_int), ("minor", C.c_int)]

class Metadata(C.Structure):  # trailing reserve: newer XLA may append fields
    _fields_ = [("struct_size", C.c_size_t), ("api_version", ApiVersion), ("traits", C.c_uint32),
                ("state_type_id", C.c_int64), ("reserve", C.c_char * 256)]

class MetadataExt(C.Structure):
    _fields_ = [("base", ExtBase), ("metadata", C.POINTER(Metadata))]

class Span(C.Structure):  # XLA_FFI_Args, XLA_FFI_Rets
    _fields_ = [("struct_size", C.c_size_t), ("extension_start", C.c_void_p), ("size", C.c_int64),
                ("types", C.c_void_p), ("data", C.c_void_p)]

class Attrs(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("extension_start", C.c_void_p), ("size", C.c_int64),
                ("types", C.c_void_p), ("names", C.c_void_p), ("attrs", C.c_void_p)]

class CallFrame(C.Structure):
    _fields_ = [("struct_size", C.c_size_t), ("extension_start", C.c_void_p), ("api", C.c_void_p),
                ("ctx", C.c_void_p), ("stage", C.c_int), ("args", Span), ("rets", Span),
                ("attrs", Attrs), ("future", C.c_void_p)]

get = C.pythonapi.PyCapsule_GetPointer
get.restype, get.argtypes = C.c_void_p, [C.py_object, C.c_char_p]
HANDLER = C.CFUNCTYPE(C.c_void_p, C.POINTER(CallFrame))
for name, capsule in sorted(_native._ext.cuda_registrations().items()):
    md = Metadata(struct_size=C.sizeof(Metadata))
    ext = MetadataExt(base=ExtBase(struct_size=C.sizeof(MetadataExt), type=1),  # 1: metadata
                      metadata=C.pointer(md))
    cf = CallFrame(struct_size=CallFrame.attrs.offset + C.sizeof(Attrs),  # XLA_FFI_CallFrame_STRUCT_SIZE
                   extension_start=C.cast(C.pointer(ext), C.c_void_p), stage=3)
    err = HANDLER(get(capsule, None))(C.byref(cf))
    print("HANDLER", name, int(md.traits), md.api_version.major, md.api_version.minor, int(err or 0))
'''


def test_cuda_handlers_declare_command_buffer_compatibility():
    """Every CUDA handler declares XLA_FFI_HANDLER_TRAITS_COMMAND_BUFFER_COMPATIBLE (bit 0 of the
    traits XLA reads from the handler's metadata at registration): they only launch kernels on
    XLA's stream and allocate nothing. (A subprocess: the metadata call is made through ctypes.)"""
    if _native._ext is None or not dict(_native._ext.cuda_registrations()):
        pytest.skip("jax_na built without CUDA handlers")
    run = subprocess.run([sys.executable, "-c", TRAITS_CHILD], cwd="/", env=_child_env(JAX_PLATFORMS="cpu"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"metadata call failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith("HANDLER ")]
    assert rows, run.stdout
    bad = [r for r in rows if r[5] != "0" or not int(r[2]) & 1]
    assert not bad, f"handlers without the command-buffer trait (name traits major minor err): {bad}"


# --- command buffers ------------------------------------------------------------------------------

CMDBUF_ON = {"xla_gpu_enable_command_buffer": "FUSION,CUSTOM_CALL", "xla_gpu_graph_min_graph_size": 1}
CMDBUF_OFF = {"xla_gpu_enable_command_buffer": ""}
CMDBUF_FLAGS = "--xla_gpu_enable_command_buffer=FUSION,CUSTOM_CALL --xla_gpu_graph_min_graph_size=1"
CB_CASE = P.problem((13, 17), (3, 5), stride=(1, 2), dilation=(2, 1), is_causal=(True, False),
                    heads=4, heads_kv=2, head_dim=64)


def _run_np(fn, args):
    return [np.asarray(t) for t in jax.block_until_ready(fn(*args))]


def _assert_bitwise(got, want, what):
    names = ("out", "lse", "dq", "dk", "dv")
    for n, g, w in zip(names, got, want):
        assert g.shape == w.shape and np.array_equal(_bits(g), _bits(w)), f"{what}: {n} differs bitwise"


@functools.lru_cache(maxsize=None)
def _plain_results(family):
    fn = jax.jit(_fwd_bwd(CB_CASE, family), compiler_options=CMDBUF_OFF)
    return [_run_np(fn, _device_inputs(CB_CASE, seed, BF16)) for seed in (1, 2)]


@gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_command_buffers_match_plain_launches_bitwise(family):
    inputs = [_device_inputs(CB_CASE, seed, BF16) for seed in (1, 2)]
    c0 = _counts()
    want = _plain_results.__wrapped__(family)
    c1 = _counts()
    on = jax.jit(_fwd_bwd(CB_CASE, family), compiler_options=CMDBUF_ON)
    got = [_run_np(on, x) for x in inputs] + [_run_np(on, inputs[0])]  # the last: a replay
    c2 = _counts()
    for i, (g, w) in enumerate(zip(got, want + want[:1])):
        _assert_bitwise(g, w, f"{family} with command buffers, input set {i}")
    if c0 is None:
        pytest.skip("this build has no cuda_call_counts(): cannot tell whether command buffers were used")
    assert c1[0] > c0[0] and c1[1] == c0[1], f"command buffers off: (calls, captured) {c0} -> {c1}"
    assert c2[1] > c1[1], (
        f"{family}: with {CMDBUF_ON} no jax_na handler ran under stream capture ((calls, captured) "
        f"{c1} -> {c2}): XLA did not put the custom calls into a command buffer")
    print(f"{family}: 3 runs with command buffers: {c2[0] - c1[0]} handler calls, "
          f"{c2[1] - c1[1]} under capture (replays call no handler)")


CMDBUF_CHILD = r'''
import sys
import numpy as np
import jax
from jax_na import _native
from tests.test_gpu_hardening import CB_CASE, BF16, _device_inputs, _fwd_bwd, _run_np
out = {}
for family in sys.argv[2:]:
    fn = jax.jit(_fwd_bwd(CB_CASE, family))  # command buffers from XLA_FLAGS
    c0 = _native._ext.cuda_call_counts()
    for seed in (1, 2):
        for i, a in enumerate(_run_np(fn, _device_inputs(CB_CASE, seed, BF16))):
            out[f"{family}/{seed}/{i}"] = a
    c1 = _native._ext.cuda_call_counts()
    out[f"{family}/captured"] = np.array(c1[1] - c0[1])
np.savez(sys.argv[1], **{k: (v.view(np.uint16) if v.dtype.itemsize == 2 else v) for k, v in out.items()})
'''


# Results (out, lse, dq, dk, dv) that depend on a reduction XLA itself emits (delta = rowsum(dO * O)
# feeds dq and dk): another process may compile that reduction differently, so those are
# compared to within bf16 rounding across processes; our kernels' own outputs bitwise.
XLA_REDUCED = (2, 3)


@gpu
def test_command_buffers_from_xla_flags_match(tmp_path):
    """The same with command buffers turned on by XLA_FLAGS (how a user turns them on), every
    family in one subprocess (a separate compilation: see XLA_REDUCED)."""
    fams = [f for f in jax_na.available_families() if f.startswith("cuda-")]
    if not fams:
        pytest.skip("no CUDA family available")
    if _counts() is None:
        pytest.skip("this build has no cuda_call_counts()")
    path = tmp_path / "cmdbuf.npz"
    env = _child_env(XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + CMDBUF_FLAGS).strip())
    run = subprocess.run([sys.executable, "-c", CMDBUF_CHILD, str(path), *fams], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"child failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    got = np.load(path)
    problems = []
    for fam in fams:
        if int(got[f"{fam}/captured"]) == 0:
            problems.append(f"{fam}: no handler call under stream capture with XLA_FLAGS={CMDBUF_FLAGS}")
        for seed, want in zip((1, 2), _plain_results(fam)):
            for i, w in enumerate(want):
                g = got[f"{fam}/{seed}/{i}"]
                if i in XLA_REDUCED:
                    g = g.view(w.dtype) if g.dtype != w.dtype else g
                    gf, wf = g.astype(np.float64), w.astype(np.float64)
                    err = float(np.max(np.abs(gf - wf))) / max(float(np.max(np.abs(wf))), 1e-30)
                    if not err <= 1e-2:
                        problems.append(f"{fam}: result {i} of input set {seed}: max error {err:.2e} x max|ref|")
                elif not np.array_equal(_bits(g), _bits(w)):
                    problems.append(f"{fam}: result {i} of input set {seed} differs bitwise")
    assert not problems, "\n".join(problems)


# --- determinism --------------------------------------------------------------------------------

# Families whose backward is not bitwise reproducible by design (e.g. float atomics), with why.
# None today: naive, gemm and fused accumulate each output element in one thread, no atomics.
NONDETERMINISTIC: dict = {}

DET_CASES = {
    # many CTAs, GQA (4 query heads per kv head), a large 2-D window, causal along one dim
    "2d-gqa-bf16": (P.problem((40, 48), (7, 9), dilation=(1, 2), is_causal=(False, True), batch=2,
                              heads=8, heads_kv=2, head_dim=64), BF16),
    # long 1-D window, MQA, head_dim 128
    "1d-mqa-d128-f16": (P.problem((700,), 129, stride=4, batch=2, heads=4, heads_kv=1, head_dim=128), F16),
    "3d-f32": (P.problem((6, 10, 12), (3, 5, 5), dilation=(2, 1, 1), heads=4, heads_kv=2, head_dim=32), F32),
}


def _spread(runs):
    """Max |run_i - run_0| per quantity."""
    names = ("out", "lse", "dq", "dk", "dv")
    return {n: max(float(np.max(np.abs(r[i].astype(np.float64) - runs[0][i].astype(np.float64))))
                   for r in runs[1:]) for i, n in enumerate(names)}


@gpu
@pytest.mark.parametrize("case", list(DET_CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_backward_bitwise_identical_over_3_runs(family, case):
    p, dtype = DET_CASES[case]
    fn = jax.jit(_fwd_bwd(p, family))
    args = _device_inputs(p, 17, dtype)
    runs = [_run_np(fn, args) for _ in range(3)]
    same = all(np.array_equal(_bits(a), _bits(b)) for r in runs[1:] for a, b in zip(r, runs[0]))
    if family in NONDETERMINISTIC:
        print(f"{family} {case}: bitwise identical={same}; run-to-run max abs difference {_spread(runs)} "
              f"({NONDETERMINISTIC[family]})")
        return
    assert same, f"{family} {case}: results differ between identical runs: max abs difference {_spread(runs)}"


# --- native errors ------------------------------------------------------------------------------

def _attrs(scale=None, head_dim=64, **over):
    a = dict(kernel_size=[3], stride=[1], dilation=[1], is_causal=[0])
    a.update(over)
    out = {n: np.asarray(val, np.int64) for n, val in a.items()}
    out["scale"] = np.float32(head_dim ** -0.5 if scale is None else scale)
    return out


# A CUDA target's last result is its flag buffer, uint32[3] (jax_na/primitives.py); flag_len
# sets its length here. The helpers return the other results.
def _ffi_fwd(target, q, k, v, flag_len=3, **over):
    call = jax.ffi.ffi_call(target, (jax.ShapeDtypeStruct(q.shape, q.dtype),
                                     jax.ShapeDtypeStruct(q.shape[:-1], jnp.float32),
                                     jax.ShapeDtypeStruct((flag_len,), jnp.uint32)))
    attrs = _attrs(head_dim=q.shape[-1], **over)
    return jax.block_until_ready(jax.jit(lambda q, k, v: call(q, k, v, **attrs))(q, k, v))[:-1]


def _ffi_bwd(target, q, k, v, dout, lse, delta, **over):
    call = jax.ffi.ffi_call(target, tuple(jax.ShapeDtypeStruct(t.shape, t.dtype) for t in (q, k, v))
                            + (jax.ShapeDtypeStruct((3,), jnp.uint32),))
    attrs = _attrs(head_dim=q.shape[-1], **over)
    return jax.block_until_ready(jax.jit(lambda *a: call(*a, **attrs))(q, k, v, dout, lse, delta))[:-1]


def _qkv(shape_q, heads_kv, dtype, seed=3):
    rng = np.random.default_rng(seed)
    b, l, h, d = shape_q
    return (P.put(rng.standard_normal(shape_q), dtype), P.put(rng.standard_normal((b, l, heads_kv, d)), dtype),
            P.put(rng.standard_normal((b, l, heads_kv, d)), dtype))


def _assert_valid_call_still_works(family):
    """The process and the family still work after an error: a direct call matches the reference."""
    q, k, v = _qkv((1, 12, 2, 64), 1, BF16)
    out, lse = _ffi_fwd(_native.target_name("fwd", family), q, k, v)
    ref_out, ref_lse = jax_na.na1d(q, k, v, 3, return_lse=True, backend="reference")
    assert P.rel_err(np.asarray(out, np.float32), np.asarray(ref_out, np.float32)) <= 2e-2
    assert P.rel_err(lse, ref_lse) <= 1e-2


# A problem each family's kernels cannot run (Python would route it elsewhere): head_dim 40 for
# the tiled families; for cuda-naive, a head_dim whose per-warp buffers exceed shared memory.
UNSUPPORTED = {"cuda-naive": ((1, 4, 1, 8192), F32)}
UNSUPPORTED_DEFAULT = ((1, 12, 2, 40), BF16)


@gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_unsupported_problem_raises_naming_target_and_reason(family):
    shape, dtype = UNSUPPORTED.get(family, UNSUPPORTED_DEFAULT)
    target = _native.target_name("fwd", family)
    q, k, v = _qkv(shape, shape[2], dtype)
    try:
        _ffi_fwd(target, q, k, v)
    except Exception as e:  # noqa: BLE001 - checked below
        msg = " ".join(str(e).split())
        assert isinstance(e, RuntimeError), (type(e), msg)
        assert re.search(rf"{target}: {family} does not support this problem \(.*head_dim {shape[-1]}\b", msg), msg
        assert "cudaErrorNotSupported" in msg, msg
    else:
        pytest.skip(f"{family} runs head_dim {shape[-1]} {jnp.dtype(dtype).name} directly (nothing to refuse)")
    _assert_valid_call_still_works(family)


@gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_errors_name_the_cuda_target(family):
    q, k, v = _qkv((1, 12, 2, 64), 1, BF16)
    fwd, bwd = _native.target_name("fwd", family), _native.target_name("bwd", family)
    with pytest.raises(Exception) as excinfo:
        _ffi_fwd(fwd, q, k, v, dilation=[5])  # 3 * 5 > 12
    msg = " ".join(str(excinfo.value).split())
    assert re.search(rf"{fwd}: jax_na fwd: kernel_size \* dilation must not exceed the extent", msg), msg
    lse = P.put(np.zeros(q.shape[:-1]))
    with pytest.raises(Exception) as excinfo:
        _ffi_bwd(bwd, q, k, v, q, lse, P.put(np.zeros(q.shape[:-2])))  # delta of the wrong shape
    msg = " ".join(str(excinfo.value).split())
    assert re.search(rf"{bwd}: jax_na bwd: delta has shape", msg), msg
    with pytest.raises(Exception) as excinfo:
        _ffi_fwd(fwd, q, k, v, flag_len=2)
    msg = " ".join(str(excinfo.value).split())
    assert re.search(rf"{fwd}: the flag result must hold 3 uint32", msg), msg
    _assert_valid_call_still_works(family)


SCRATCH_CHILD = r'''
import sys
import jax, jax.numpy as jnp, numpy as np
import jax_na
family = sys.argv[1]
rng = np.random.default_rng(0)
q, k, v = (jnp.asarray(rng.standard_normal((1, 24, 2, 64)), jnp.bfloat16) for _ in range(3))
f = lambda q, k, v: jax_na.na1d(q, k, v, 5, backend=family)
loss = lambda q, k, v: jnp.sum(f(q, k, v).astype(jnp.float32))
for label, opts in (("plain", {"xla_gpu_enable_command_buffer": ""}),
                    ("cmdbuf", {"xla_gpu_enable_command_buffer": "FUSION,CUSTOM_CALL",
                                "xla_gpu_graph_min_graph_size": 1})):
    try:
        jax.block_until_ready(jax.jit(jax.grad(loss, argnums=(0, 1, 2)), compiler_options=opts)(q, k, v))
        print("RESULT", label, "no error", flush=True)
    except Exception as e:
        print("RESULT", label, type(e).__name__, " ".join(str(e).split())[:800], flush=True)
out = jax.jit(f)(q, k, v)
ref = jax_na.na1d(q, k, v, 5, backend="reference")
print("AFTER", float(jnp.max(jnp.abs(out.astype(jnp.float32) - ref.astype(jnp.float32)))), flush=True)
'''


@gpu
def test_scratch_allocation_failure_is_an_error():
    """A backward whose scratch cannot be allocated (forced: JAX_NA_TEST_BWD_WORKSPACE_BYTES = 1 PiB)
    raises, naming the target and the size; with command buffers on, asking for scratch while XLA
    records the graph raises instead; the process then still runs a valid forward."""
    fams = [f for f in jax_na.available_families() if f.startswith("cuda-")]
    if not fams:
        pytest.skip("no CUDA family available")
    family = "cuda-fused" if "cuda-fused" in fams else fams[0]
    nbytes = 1 << 50
    run = subprocess.run([sys.executable, "-c", SCRATCH_CHILD, family], cwd="/", capture_output=True, text=True,
                         env=_child_env(JAX_NA_TEST_BWD_WORKSPACE_BYTES=nbytes), timeout=600)
    assert run.returncode == 0, f"child died (rc={run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    res = {line.split()[1]: line for line in run.stdout.splitlines() if line.startswith("RESULT ")}
    target = _native.target_name("bwd", family)
    alloc = rf"{target}: scratch allocation failed: could not allocate {nbytes} bytes"
    capture = rf"{target}: needs {nbytes} bytes of scratch, which cannot be allocated while XLA records"
    assert re.search(alloc, res.get("plain", "")), run.stdout
    # Under command buffers the handler runs during capture (the capture guard answers); an XLA that
    # did not capture it reaches the allocation instead. Either way: an error, not a crash.
    assert re.search(f"{capture}|{alloc}", res.get("cmdbuf", "")), run.stdout
    after = [line for line in run.stdout.splitlines() if line.startswith("AFTER ")]
    assert after and float(after[0].split()[1]) <= 0.1, run.stdout


# --- 64-bit indexing --------------------------------------------------------------------------

LARGE = dict(batch=2, length=1_050_629, heads=8, head_dim=128, kernel=7, dilation=3)
LARGE_ELEMENTS = LARGE["batch"] * LARGE["length"] * LARGE["heads"] * LARGE["head_dim"]
assert LARGE_ELEMENTS > 2 ** 31
needs_large = pytest.mark.skipif(
    os.environ.get("JAX_NA_TEST_LARGE") != "1",
    reason="opt-in: set JAX_NA_TEST_LARGE=1 (tensors of 2.15e9 elements: ~36 GB of GPU memory, ~15 s per family)")


def _large_f(family, return_lse=True):
    kw = dict(kernel_size=LARGE["kernel"], dilation=LARGE["dilation"], return_lse=return_lse, backend=family)
    return lambda q, k, v: jax_na.neighborhood_attention(q, k, v, **kw)


@functools.lru_cache(maxsize=None)
def _large_programs():
    b, l, h, d = LARGE["batch"], LARGE["length"], LARGE["heads"], LARGE["head_dim"]

    @jax.jit
    def make_inputs(seed):
        keys = jax.random.split(jax.random.PRNGKey(seed), 4)
        return tuple(jax.random.normal(key, (b, l, h, d), BF16) for key in keys)

    @jax.jit
    def finite(*xs):
        return jnp.stack([jnp.all(jnp.isfinite(x.astype(F32))) for x in xs])

    # Chunks with halos: chunk [s, s + ch) gives the exact result for queries and keys at least
    # `halo` from its ends (2 * kernel * dilation: windows and inverse windows lie inside) or at a
    # true end of the sequence. Starts are multiples of the dilation (same dilation groups).
    dil, halo = LARGE["dilation"], 2 * LARGE["kernel"] * LARGE["dilation"]
    ch = 16384 + (l - 16384) % dil
    step = (ch - 2 * halo) // dil * dil
    starts = list(range(0, l - ch, step)) + [l - ch]

    @jax.jit
    def chunk_stats(q, k, v, dout, out, lse, dq, dk, dv, s, lo, hi):
        sl = lambda x: jax.lax.dynamic_slice_in_dim(x, s, ch, axis=1)  # noqa: E731
        (o_ref, l_ref), vjp = jax.vjp(_large_f("reference"), sl(q), sl(k), sl(v))
        dq_ref, dk_ref, dv_ref = vjp((sl(dout), jnp.zeros_like(l_ref)))
        pos = s + jnp.arange(ch)
        m = (pos >= lo) & (pos < hi)
        rows = []
        for got, ref in ((out, o_ref), (lse, l_ref), (dq, dq_ref), (dk, dk_ref), (dv, dv_ref)):
            g, r = sl(got).astype(F32), ref.astype(F32)
            mm = m.reshape((1, ch) + (1,) * (g.ndim - 2))
            diff = jnp.where(mm, jnp.abs(g - r), 0.0)
            rr = jnp.where(mm, jnp.abs(r), 0.0)
            bad = jnp.sum(jnp.where(mm, ~jnp.isfinite(g), False)).astype(F32)
            rows.append(jnp.stack([jnp.max(diff), jnp.max(rr), jnp.sum(diff * diff), jnp.sum(rr * rr), bad]))
        return jnp.stack(rows)

    def cores():
        for s in starts:
            yield s, (0 if s == 0 else s + halo), (l if s + ch == l else s + ch - halo)

    @jax.jit
    def rows_of(x, idx):  # x [B, L, ...] -> x[b, t] for (b, t) = divmod(idx, L)
        return jnp.take(x.reshape((b * l,) + x.shape[2:]), idx, axis=0)

    return make_inputs, finite, chunk_stats, cores, rows_of


def _neighbours(t):
    """Key positions of query position t (tests/oracle.py's reading of the semantics)."""
    l, kk, d = LARGE["length"], LARGE["kernel"], LARGE["dilation"]
    lo, hi = max(0, t - 2 * kk * d), min(l, t + 2 * kk * d + 1)
    return [y for y in range(lo, hi) if is_neighbour_1d(t, y, l, kk, 1, d, False)]


def _sample_tokens(seed):
    """(b, t) rows to check in float64: the ends of each batch, around element 2^31, random."""
    b, l, h, d = LARGE["batch"], LARGE["length"], LARGE["heads"], LARGE["head_dim"]
    tok = (2 ** 31 // d) // h  # flat token of element 2^31 (first element of head 0 of that token)
    cross = [divmod(tok + o, l) for o in (-2, -1, 0, 1, 2)]
    rng = np.random.default_rng(seed)
    rand = [(int(rng.integers(0, b)), int(rng.integers(0, l))) for _ in range(6)]
    ends = [(0, 0), (0, 1), (0, l - 1), (1, 0), (1, l - 2), (1, l - 1)]
    return sorted(set(ends + cross + rand))


def _float64_rows(fetch, samples):
    """Out, lse, dq of the sampled queries and dk, dv of the sampled keys, in float64 from their
    neighbourhoods. fetch(name, [(b, t)]) -> float64 [n, H, D] rows of q/k/v/dout."""
    h, d = LARGE["heads"], LARGE["head_dim"]
    scale = d ** -0.5
    need_q = set(samples)
    inverse = {}
    for b, t in samples:  # queries attending key t
        xs = [x for x in range(max(0, t - 2 * LARGE["kernel"] * LARGE["dilation"]),
                               min(LARGE["length"], t + 2 * LARGE["kernel"] * LARGE["dilation"] + 1))
              if t in _neighbours(x)]
        inverse[(b, t)] = xs
        need_q |= {(b, x) for x in xs}
    nbrs = {bt: _neighbours(bt[1]) for bt in need_q}
    need_kv = sorted({(b, y) for (b, t), ys in nbrs.items() for y in ys} | set(samples))
    need_q = sorted(need_q)
    qd = dict(zip(need_q, fetch("q", need_q)))
    dod = dict(zip(need_q, fetch("dout", need_q)))
    kd = dict(zip(need_kv, fetch("k", need_kv)))
    vd = dict(zip(need_kv, fetch("v", need_kv)))
    per_query = {}
    for bt in need_q:
        b = bt[0]
        kk = np.stack([kd[(b, y)] for y in nbrs[bt]])  # [n, H, D]
        vv = np.stack([vd[(b, y)] for y in nbrs[bt]])
        s = scale * np.einsum("hd,nhd->hn", qd[bt], kk)
        m = s.max(axis=1, keepdims=True)
        pr = np.exp(s - m)
        z = pr.sum(axis=1, keepdims=True)
        pr /= z
        dp = np.einsum("hd,nhd->hn", dod[bt], vv)
        delta = (pr * dp).sum(axis=1, keepdims=True)
        ds = pr * (dp - delta)
        per_query[bt] = dict(out=np.einsum("hn,nhd->hd", pr, vv), lse=(m + np.log(z))[:, 0],
                             dq=scale * np.einsum("hn,nhd->hd", ds, kk), p=pr, ds=ds)
    want = {n: [] for n in ("out", "lse", "dq", "dk", "dv")}
    for bt in samples:
        for n in ("out", "lse", "dq"):
            want[n].append(per_query[bt][n])
        b, t = bt
        dk = np.zeros((h, d))
        dv = np.zeros((h, d))
        for x in inverse[bt]:
            j = nbrs[(b, x)].index(t)
            pq = per_query[(b, x)]
            dv += pq["p"][:, j, None] * dod[(b, x)]
            dk += scale * pq["ds"][:, j, None] * qd[(b, x)]
        want["dk"].append(dk)
        want["dv"].append(dv)
    return {n: np.stack(v) for n, v in want.items()}


@gpu
@needs_large
@pytest.mark.parametrize("family", FAMILIES)
def test_tensors_over_2_31_elements(family):
    stats = jax.devices()[0].memory_stats() or {}
    if stats.get("bytes_limit", 80e9) < 45e9:
        pytest.skip(f"needs ~36 GB of free GPU memory, the allocator has {stats.get('bytes_limit')} bytes")
    make_inputs, finite, chunk_stats, cores, rows_of = _large_programs()
    seed = zlib.crc32(family.encode()) % 10007 + 1  # fresh inputs per family (see the docstring)
    q, k, v, dout = make_inputs(seed)
    dout = dout * 0.5

    @jax.jit
    def fwd_bwd(q, k, v, dout):
        (out, lse), vjp = jax.vjp(_large_f(family), q, k, v)
        return (out, lse) + tuple(vjp((dout, jnp.zeros_like(lse))))

    out, lse, dq, dk, dv = jax.block_until_ready(fwd_bwd(q, k, v, dout))
    names = ("out", "lse", "dq", "dk", "dv")
    assert out.size == LARGE_ELEMENTS and dk.size == LARGE_ELEMENTS
    fin = np.asarray(finite(out, lse, dq, dk, dv))
    assert fin.all(), f"{family}: non-finite entries in {[n for n, f in zip(names, fin) if not f]}"

    # every element against the float32 reference, chunk by chunk
    acc = np.zeros((5, 5))
    for s, lo, hi in cores():
        st = np.asarray(chunk_stats(q, k, v, dout, out, lse, dq, dk, dv, s, lo, hi), np.float64)
        acc[:, 0] = np.maximum(acc[:, 0], st[:, 0])
        acc[:, 1] = np.maximum(acc[:, 1], st[:, 1])
        acc[:, 2:] += st[:, 2:]
    problems = []
    for i, n in enumerate(names):
        maxdiff, maxref, d2, r2, bad = acc[i]
        rel = np.sqrt(d2) / max(np.sqrt(r2), 1e-30)
        if bad or rel > 2e-2 or maxdiff > 8e-2 * maxref:
            problems.append(f"{n}: {int(bad)} non-finite, relative error {rel:.3g}, max |diff| "
                            f"{maxdiff:.3g} (max |ref| {maxref:.3g})")
    assert not problems, f"{family} vs reference (every element):\n  " + "\n  ".join(problems)

    # sampled rows (incl. the last ones, past element 2^31) against float64 from their neighbourhoods
    samples = _sample_tokens(seed)
    length = LARGE["length"]
    arrays = dict(q=q, k=k, v=v, dout=dout)

    def fetch(name, bts):
        idx = np.asarray([b * length + t for b, t in bts], np.int32)
        return list(np.asarray(rows_of(arrays[name], idx), np.float64))

    want = _float64_rows(fetch, samples)
    idx = np.asarray([b * length + t for b, t in samples], np.int32)
    got = {n: np.asarray(rows_of(x, idx), np.float64) for n, x in zip(names, (out, lse, dq, dk, dv))}
    for n in names:
        err = P.rel_err(got[n], want[n])
        worst = float(np.max(np.abs(got[n] - want[n]))) / max(float(np.max(np.abs(want[n]))), 1e-30)
        if not (err <= 2e-2 and worst <= 5e-2):
            problems.append(f"{n}: relative error {err:.3g}, max elementwise {worst:.3g} of max |want|")
    assert not problems, (f"{family} vs float64 on rows {samples}:\n  " + "\n  ".join(problems))
    del q, k, v, dout, out, lse, dq, dk, dv
