"""Shared test configuration.

- The `gpu` marker skips with a reason where JAX sees no GPU.
- Fast XLA compilation: the CPU suite compiles hundreds of tiny programs (one per random
  problem), where XLA:CPU compilation (LLVM optimisation, the MLIR fusion emitters) dominates
  the run time and buys nothing: these flags make it ~9x cheaper. Set
  JAX_NA_TEST_FAST_COMPILE=0 to keep XLA's defaults. Native kernels are not affected.
- Hypothesis: a fixed, derandomized profile ("ci") so every run tests the same examples;
  HYPOTHESIS_PROFILE=dev draws fresh ones.
"""

import os

if os.environ.get("JAX_NA_TEST_FAST_COMPILE", "1") != "0":  # before JAX creates its backends
    _fast = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true",
             "--xla_cpu_use_fusion_emitters=false", "--xla_cpu_parallel_codegen_split_count=1")
    _flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = " ".join([_flags] + [f for f in _fast if f.split("=")[0] not in _flags]).strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=10, deadline=None, derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", max_examples=25, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _has_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU visible to JAX (run via scripts/gpu_check.sh)")


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip = pytest.mark.skip(reason="no GPU visible to JAX on this machine (GPU tests run through scripts/gpu_check.sh)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
