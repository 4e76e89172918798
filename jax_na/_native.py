"""Loads the compiled extension and registers its XLA FFI handlers, once, at import.

The extension `jax_na._jax_na_native` (built from cuda/bindings.cc) returns handler capsules by
target name. It may be missing (pure-Python install) or built without CUDA; `available_families`
says what can run.
"""

from __future__ import annotations

import functools

import jax

try:
    from . import _jax_na_native as _ext
except ImportError as e:  # pragma: no cover - exercised only on installs without the extension
    _ext = None
    IMPORT_ERROR: Exception | None = e
else:
    IMPORT_ERROR = None

# Native kernel families and their FFI platform.
CPU_FAMILIES = ("cpu",)
CUDA_FAMILIES = ("cuda-naive", "cuda-gemm", "cuda-fused", "cuda-hopper")
# Families whose kernels run only on one GPU architecture: family -> compute capability.
ARCH_FAMILIES = {"cuda-hopper": "9.0"}
# cuda-hopper's second backward target, RD: takes (q, k, v, dout, lse, out, dlse) and forms delta
# in its dQ kernel (cuda/hopper/row_delta.h) instead of taking XLA's.
HOPPER_RD_TARGET = "jax_na_bwd_cuda_hopper_rd"


def target_name(direction: str, family: str) -> str:
    """FFI target of one direction ('fwd' or 'bwd') of one family, e.g. jax_na_fwd_cuda_fused."""
    return f"jax_na_{direction}_{family.replace('-', '_')}"


def _register() -> tuple[frozenset, frozenset]:
    if _ext is None:
        return frozenset(), frozenset()
    cpu = dict(_ext.cpu_registrations())
    for name, capsule in cpu.items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    cuda = dict(_ext.cuda_registrations())
    for name, capsule in cuda.items():
        jax.ffi.register_ffi_target(name, capsule, platform="CUDA")
    return frozenset(cpu), frozenset(cuda)


_CPU_TARGETS, _CUDA_TARGETS = _register()


def has_family(family: str) -> bool:
    """True if this build holds the family's kernels (whether or not a device can run them)."""
    targets = _CPU_TARGETS if family in CPU_FAMILIES else _CUDA_TARGETS
    return target_name("fwd", family) in targets and target_name("bwd", family) in targets


@functools.lru_cache(maxsize=1)
def has_cuda_device() -> bool:
    try:
        return bool(jax.devices("cuda"))
    except RuntimeError:
        return False


@functools.lru_cache(maxsize=1)
def cuda_compute_capabilities() -> frozenset:
    """Compute capabilities ("9.0", ...) of the CUDA devices JAX sees."""
    if not has_cuda_device():
        return frozenset()
    return frozenset(str(getattr(d, "compute_capability", "")) for d in jax.devices("cuda"))


def hopper_rd_pays(q_shape, heads_kv: int, params) -> bool:
    """Whether cuda-hopper's backward of this problem (query shape, key/value heads, NAParams)
    lowers to HOPPER_RD_TARGET: the build has it and the native rule (cuda/hopper/rd_rule.h, the
    one place it is decided, with the measurements behind it) says that it pays."""
    if HOPPER_RD_TARGET not in _CUDA_TARGETS:
        return False
    return bool(_ext.hopper_rd_pays(
        list(q_shape), int(heads_kv), list(params.kernel_size), list(params.stride),
        list(params.dilation), [int(c) for c in params.is_causal]))


def runs_here(family: str) -> bool:
    """A built family's kernels can run on this machine's devices."""
    if family in CPU_FAMILIES:
        return True
    if not has_cuda_device():
        return False
    arch = ARCH_FAMILIES.get(family)
    return arch is None or cuda_compute_capabilities() == {arch}


def available_families() -> tuple[str, ...]:
    """Families built AND runnable here (CUDA families need a CUDA device visible to JAX;
    cuda-hopper needs every such device to be compute capability 9.0)."""
    return tuple(f for f in CPU_FAMILIES + CUDA_FAMILIES if has_family(f) and runs_here(f))
