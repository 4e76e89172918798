"""Quickstart: 1-D, 2-D and 3-D neighborhood attention, forward and backward, on the default device.

Each problem runs through the fastest backend jax_na picks (backend=None), is checked against
the pure-JAX reference, and is timed (median of several runs after a warm-up).

    python examples/quickstart.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import jax_na

PROBLEMS = [
    # name, spatial extents, kernel_size, dilation, stride, is_causal
    ("1-D causal", (1024,), 65, 1, 1, True),
    ("2-D dilated", (48, 48), 7, 2, 1, False),
    ("3-D strided", (8, 16, 16), (3, 5, 5), 1, (1, 2, 2), False),
]
BATCH, HEADS, HEAD_DIM = 2, 4, 32


def median_ms(fn, *args, reps: int = 7) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main() -> None:
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; native families: {jax_na.available_families()}")
    print(f"{'problem':<14} {'fwd ms':>8} {'fwd+bwd ms':>11} {'ref fwd+bwd ms':>15} {'out err':>9} {'grad err':>9}")
    keys = iter(jax.random.split(jax.random.PRNGKey(0), 3 * len(PROBLEMS)))
    for name, spatial, kernel, dilation, stride, causal in PROBLEMS:
        shape = (BATCH, *spatial, HEADS, HEAD_DIM)
        q, k, v = (jax.random.normal(next(keys), shape, jnp.float32) for _ in range(3))
        cot = jnp.cos(q)  # a fixed, non-trivial output cotangent

        def run(q, k, v, backend):
            return jax_na.neighborhood_attention(q, k, v, kernel, dilation=dilation, stride=stride,
                                                 is_causal=causal, backend=backend)

        def loss(q, k, v, backend):
            return jnp.sum(run(q, k, v, backend) * cot)

        fwd = jax.jit(lambda q, k, v: run(q, k, v, None))
        fwd_bwd = jax.jit(jax.grad(lambda q, k, v: loss(q, k, v, None), argnums=(0, 1, 2)))
        ref_fwd_bwd = jax.jit(jax.grad(lambda q, k, v: loss(q, k, v, "reference"), argnums=(0, 1, 2)))

        out_err = rel_err(fwd(q, k, v), run(q, k, v, "reference"))
        grad_err = max(rel_err(a, b) for a, b in zip(fwd_bwd(q, k, v), ref_fwd_bwd(q, k, v)))
        assert out_err < 1e-4 and grad_err < 1e-4, f"{name}: mismatch against the reference"
        print(f"{name:<14} {median_ms(fwd, q, k, v):8.2f} {median_ms(fwd_bwd, q, k, v):11.2f} "
              f"{median_ms(ref_fwd_bwd, q, k, v):15.2f} {out_err:9.1e} {grad_err:9.1e}")
    print("all problems match the reference")


if __name__ == "__main__":
    main()
