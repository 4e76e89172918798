"""Sharding: batch/head rules and spatial parallelism (issue 7).

The multi-device cases live in tests/sharding_cases.py and run in a subprocess with 8 host CPU
devices (the device count is fixed when JAX starts, so this process can't switch). The rest
checks, in this process, what needs no extra devices: halo widths, the layout errors, the
head-sharding choice and the vmap fold.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, NamedSharding, PartitionSpec as P

from jax_na import backends, reference
from jax_na.autodiff import na_with_lse
from jax_na.params import make_params
from jax_na.sharding import head_layout
from jax_na.halo_exchange import halo_widths, spatial_parallel

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_multi_device_cases():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "sharding_cases.py")]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"sharding_cases.py failed:\n{run.stdout[-8000:]}\n{run.stderr[-4000:]}"
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]


# --- halo widths: global window math, edge shards included -----------------------------------

@pytest.mark.parametrize("args, want", [
    ((32, 8, 5, 1, 1, False), (2, 2)),   # k=5: two keys each side
    ((16, 8, 5, 1, 1, False), (3, 3)),   # border shards: windows slide inward, need one more
    ((32, 8, 4, 1, 1, True), (3, 0)),    # causal: left only
    ((32, 4, 3, 1, 2, False), (2, 2)),   # dilation 2: one neighbour of the same group each side
    ((32, 4, 3, 2, 2, False), (0, 2)),   # stride 2 (leader right of centre): right only
])
def test_halo_widths(args, want):
    assert halo_widths(*args) == want


def test_halo_widths_cover_every_window():
    extent, shards = 24, 4
    for kernel, stride, dilation, causal in ((3, 1, 1, False), (4, 3, 2, False), (5, 2, 1, True), (2, 2, 3, True)):
        left, right = halo_widths(extent, shards, kernel, stride, dilation, causal)
        coords, valid = reference.neighbor_table(extent, kernel, stride, dilation, causal)
        m = extent // shards
        for x in range(extent):
            start = (x // m) * m
            keys = coords[x][valid[x]]
            assert start - left <= keys.min() and keys.max() < start + m + right


# --- errors: named argument and rule ----------------------------------------------------------

def _arrays(shape, heads_kv):
    b, *spatial, _, d = shape
    return jnp.zeros(shape), jnp.zeros((b, *spatial, heads_kv, d)), jnp.zeros((b, *spatial, heads_kv, d))


@pytest.mark.parametrize("shape, heads_kv, kw, match", [
    ((1, 16, 2, 8), 2, dict(kernel_size=5, spatial_axes="x"), "halo of dimension 0 .* exceeds the shard extent 2"),
    ((1, 20, 2, 8), 2, dict(kernel_size=3, spatial_axes="x"), "extent 20 of dimension 0 must be divisible by .* 8"),
    ((1, 32, 4, 8), 1, dict(kernel_size=3, spatial_axes="x", heads_axis="h"), "heads_axis 'h'"),
    ((1, 32, 2, 8), 2, dict(kernel_size=3, spatial_axes="y"), "no axis 'y'"),
    ((1, 32, 2, 8), 2, dict(kernel_size=3, spatial_axes="x", batch_axis="x"), "one dimension only"),
    ((1, 32, 32, 2, 8), 2, dict(kernel_size=3, spatial_axes=("x",)), "per spatial dim"),
    ((3, 32, 2, 8), 2, dict(kernel_size=3, spatial_axes="x", batch_axis="h"), "batch 3 .* batch_axis 'h'"),
    ((1, 32, 2, 8), 2, dict(kernel_size=40, spatial_axes="x"), "kernel_size \\* dilation"),
])
def test_spatial_parallel_errors(shape, heads_kv, kw, match):
    mesh = AbstractMesh((8, 2), ("x", "h"))
    with pytest.raises(ValueError, match=match):
        spatial_parallel(*_arrays(shape, heads_kv), mesh=mesh, **kw)


# --- head sharding choice: GQA groups stay whole ----------------------------------------------

def test_head_layout_choice():
    mesh = AbstractMesh((2, 4), ("b", "h"))
    spec = NamedSharding(mesh, P("b", None, "h", None))
    assert head_layout(spec, 1, heads_kv=4) == ("b", "h", True)
    assert head_layout(spec, 1, heads_kv=8) == ("b", "h", True)
    assert head_layout(spec, 1, heads_kv=2) == ("b", "h", False)  # each shard picks its kv head
    assert head_layout(spec, 1, heads_kv=1) == ("b", "h", False)  # MQA
    assert head_layout(spec, 1, heads_kv=6) == ("b", None, True)  # 6 kv heads, 4 shards: replicate
    assert head_layout(NamedSharding(mesh, P(None, "b", "h")), 1, 4) == (None, "h", True)  # spatial dropped
    assert head_layout(NamedSharding(mesh, P(("b", "h"))), 2, 1) == (("b", "h"), None, True)


# --- one device: the custom_partitioning wrapper changes nothing, vmap folds into batch --------

def test_single_device_vmap_fold():
    key = jax.random.split(jax.random.key(1), 3)
    q = jax.random.normal(key[0], (3, 2, 8, 4, 4))
    k = jax.random.normal(key[1], (2, 8, 2, 4))
    v = jax.random.normal(key[2], (2, 8, 2, 4))
    params = make_params(q[0], k, v, 3, dilation=2)

    def loss(fn):
        return lambda q, k: jnp.sum(jnp.sin(fn(q, k)[0])) + jnp.sum(fn(q, k)[1])

    ours = jax.vmap(lambda q, k: na_with_lse(q, k, v, params, backends.AUTO), in_axes=(0, None))
    ref = jax.vmap(lambda q, k: reference.na_reference(q, k, v, params), in_axes=(0, None))
    both = lambda fn: jax.jit(lambda q, k: (fn(q, k), jax.grad(loss(fn), (0, 1))(q, k)))  # noqa: E731
    for a, b in zip(jax.tree.leaves(both(ours)(q, k)), jax.tree.leaves(both(ref)(q, k))):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
