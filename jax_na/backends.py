"""Backend names and the choice of kernel family.

`backend=` at the public API takes one of BACKENDS or None. "reference" runs the pure-JAX
function (JAX differentiates it). Every other backend runs through the primitives; None means
"auto": the family is chosen per platform at lowering time, when the platform is known.
"""

from __future__ import annotations

import jax.numpy as jnp

from . import _native

REFERENCE = "reference"
AUTO = "auto"
BACKENDS = (REFERENCE,) + _native.CPU_FAMILIES + _native.CUDA_FAMILIES

# Head dims the tensor-core families are built for; any other head_dim goes to cuda-naive.
TENSOR_CORE_HEAD_DIMS = (32, 64, 128)
# cuda-hopper's wgmma kernels: f16/bf16 at these head dims; other problems go to cuda-fused (or,
# at head dims it lacks, cuda-naive).
HOPPER_HEAD_DIMS = (32, 64, 128, 256)
# Where backend=None keeps cuda-fused although cuda-hopper runs, per direction: the forward at
# head_dim 32 (no faster on large windows, slower on small ones; its backward is as fast or
# faster everywhere measured: NOTES.md). The tuning cache picks per problem.
FUSED_FIRST_HEAD_DIMS = {"fwd": (32,), "bwd": ()}


def _hopper_runs(dtype, head_dim: int) -> bool:
    return jnp.dtype(dtype) in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16)) and head_dim in HOPPER_HEAD_DIMS


def resolve(backend: str | None) -> str:
    """Check a user's backend choice; returns a backend name or AUTO."""
    if backend is None:
        return AUTO if _native.available_families() else REFERENCE
    if backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
    if backend != REFERENCE and not _native.has_family(backend):
        why = (
            f"the native extension did not import ({_native.IMPORT_ERROR})"
            if _native._ext is None
            else "this build of jax_na does not include it (built without CUDA?)"
        )
        raise ValueError(f"backend {backend!r} is not available: {why}")
    if backend in _native.CUDA_FAMILIES and not _native.has_cuda_device():
        raise ValueError(f"backend {backend!r} is not available: JAX sees no CUDA device")
    if backend in _native.ARCH_FAMILIES and not _native.runs_here(backend):
        found = sorted(_native.cuda_compute_capabilities())
        raise ValueError(f"backend {backend!r} is not available: it needs GPUs of compute capability "
                         f"{_native.ARCH_FAMILIES[backend]} (sm_90a), JAX sees {found}")
    return backend


def from_tuning(tuned: str | None, platform: str) -> str:
    """backend=None's choice given the tuning cache's entry: the cached backend where it can run
    on this platform ("reference" meaning the XLA fallback lowering), else AUTO."""
    if tuned == REFERENCE:
        return REFERENCE
    runs_here = (tuned in _native.CPU_FAMILIES) == (platform == "cpu")
    return tuned if tuned in BACKENDS and runs_here and _native.has_family(tuned) else AUTO


def family_for(platform: str, backend: str, dtype, head_dim: int, direction: str = "fwd") -> str | None:
    """The native family the `direction` ("fwd" or "bwd") primitive lowers to on `platform`, or
    None for the XLA fallback.

    Raises ValueError when an explicitly chosen backend cannot run on the platform.
    """
    if platform == "cpu":
        if backend == AUTO:
            return "cpu" if _native.has_family("cpu") else None
        if backend == "cpu":
            return backend
    elif platform == "cuda":
        if backend == AUTO:
            fused_ok = jnp.dtype(dtype) != jnp.dtype(jnp.float32) and head_dim in TENSOR_CORE_HEAD_DIMS
            hopper_ok = (_hopper_runs(dtype, head_dim) and head_dim not in FUSED_FIRST_HEAD_DIMS[direction]
                         and _native.runs_here("cuda-hopper"))
            for family in (("cuda-hopper",) if hopper_ok else ()) + (("cuda-fused",) if fused_ok else ()) + (
                    "cuda-naive",):
                if _native.has_family(family):
                    return family
            return None
        if backend == "cuda-hopper" and not _hopper_runs(dtype, head_dim):
            backend = "cuda-fused"  # f32 (and other head dims, below)
        if backend in ("cuda-gemm", "cuda-fused") and head_dim not in TENSOR_CORE_HEAD_DIMS:
            return "cuda-naive"  # tiled families are built for these head dims only
        if backend.startswith("cuda-"):
            return backend
    if backend in (AUTO, REFERENCE):
        return None
    raise ValueError(f"backend {backend!r} cannot run on platform {platform!r}")
