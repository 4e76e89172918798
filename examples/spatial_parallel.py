"""Multi-device neighborhood attention: batch/head sharding and spatial parallelism (halo exchange).

On a machine with one CPU this makes 8 host devices to show the layouts; on GPUs it uses them all.

    python examples/spatial_parallel.py

1. Batch and heads sharded with a NamedSharding: jit runs the op locally on every shard.
2. Height sharded over all devices with jax_na.spatial_parallel: every device receives only
   the halo rows its windows need from its two neighbours, and the answer equals one device's.
"""

from __future__ import annotations

import os
import re

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import jax_na  # noqa: E402
from jax_na.halo_exchange import halo_widths  # noqa: E402

COLLECTIVE = r"(all-gather|all-reduce|collective-permute|all-to-all|reduce-scatter)(?:-start)?\("


def main():
    devices = np.array(jax.devices())
    n = len(devices)
    print(f"{n} devices: {devices[0].platform}")
    heads, height, width = 2 * n, 8 * n, 32
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (2, height, width, heads, 32), jnp.float32) for key in keys)
    kw = dict(kernel_size=7, dilation=(2, 1))
    single = jax.jit(lambda q, k, v: jax_na.na2d(q, k, v, **kw))(q, k, v)

    # 1. batch and heads
    mesh = Mesh(devices.reshape(2, n // 2) if n % 2 == 0 else devices.reshape(1, n), ("batch", "heads"))
    sharding = NamedSharding(mesh, P("batch", None, None, "heads", None))
    fn = jax.jit(lambda q, k, v: jax_na.na2d(q, k, v, **kw), in_shardings=(sharding,) * 3)
    compiled = fn.lower(q, k, v).compile()
    out = compiled(q, k, v)
    print(f"batch/heads: max |diff| {float(jnp.max(jnp.abs(out - single))):.1e}, output {out.sharding.spec}, "
          f"collectives {sorted(set(re.findall(COLLECTIVE, compiled.as_text()))) or 'none'}")

    # 2. height over all devices
    mesh = Mesh(devices, ("space",))
    left, right = halo_widths(height, n, 7, 1, 2, False)
    fn = jax.jit(lambda q, k, v: jax_na.spatial_parallel(q, k, v, mesh=mesh, spatial_axes=("space", None), **kw))
    compiled = fn.lower(q, k, v).compile()
    out = compiled(q, k, v)
    permutes = re.findall(r"=\s*(\S+)\s+collective-permute(?:-start)?\(", compiled.as_text())
    print(f"spatial: {height // n} rows per device, halo {left} above / {right} below, "
          f"max |diff| {float(jnp.max(jnp.abs(out - single))):.1e}")
    print(f"  collective-permutes (keys and values together): {sorted(set(permutes))}")


if __name__ == "__main__":
    main()
