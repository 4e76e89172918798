"""Multi-device scaling: the same problem on 1 and on all local devices, forward+backward.

    python benchmarks/scaling.py            # prints one table row per problem and device count

- batch-sharded NA (problem V1 of benchmarks.md, bf16): jit with a NamedSharding over batch; the
  sharding rules keep the op local on every device.
- spatially sharded NA (`jax_na.spatial_parallel`, halo exchange): 2-D, the height split over
  the devices. Its local compute is the exact gather formulation, so the problem is sized for
  that (the fast kernels do not yet take an offset key window).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jax_na
from benchmarks.timing import time_compiled


def _inputs(shape, dtype, seed=0):
    keys = jax.random.split(jax.random.key(seed), 4)
    return [jax.random.normal(k, shape, dtype) for k in keys]


def _fwd_bwd(attention):
    def run(q, k, v, dout):
        out, vjp = jax.vjp(attention, q, k, v)
        return (out, *vjp(dout))

    return run


def batch_sharded(n: int):
    mesh = Mesh(np.array(jax.devices()[:n]), ("data",))
    args = _inputs((128, 56, 56, 2, 32), jnp.bfloat16)
    x = NamedSharding(mesh, P("data"))
    args = [jax.device_put(a, x) for a in args]
    fn = jax.jit(_fwd_bwd(lambda q, k, v: jax_na.na2d(q, k, v, 7)), in_shardings=(x,) * 4)
    return "V1 batch-sharded fwd+bwd", fn, args


def spatially_sharded(n: int):
    mesh = Mesh(np.array(jax.devices()[:n]), ("space",))
    args = _inputs((1, 128, 128, 8, 64), jnp.float32)
    x = NamedSharding(mesh, P(None, "space"))
    args = [jax.device_put(a, x) for a in args]
    fn = jax.jit(_fwd_bwd(lambda q, k, v: jax_na.spatial_parallel(q, k, v, 7, dilation=2, mesh=mesh,
                                                                  spatial_axes=("space", None))),
                 in_shardings=(x,) * 4)
    return "2-D 128x128 H8 D64 k7 d2 spatial fwd+bwd", fn, args


def main() -> None:
    counts = sorted({1, jax.device_count()})
    print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}")
    print(f"{'problem':<44} {'devices':>7} {'ms':>9} {'speedup':>8}")
    for make in (batch_sharded, spatially_sharded):
        base = None
        for n in counts:
            name, fn, args = make(n)
            t = time_compiled(fn.lower(*args).compile(), [args], budget_s=5.0).median_s * 1e3
            base = base or t
            print(f"{name:<44} {n:>7} {t:9.3f} {base / t:7.2f}x")


if __name__ == "__main__":
    main()
