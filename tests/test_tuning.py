"""backend=None reads the tuning cache that `benchmarks/run.py --optimize` writes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jax_na
from jax_na import reference, tuning
from jax_na.params import make_params

pytestmark = pytest.mark.skipif("cpu" not in jax_na.available_families(), reason="native CPU family not built")

SHAPE, KERNEL = (1, 12, 10, 2, 8), (3, 5)


def _hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """Point the tuning cache at a temp file; returns a function writing entries to it."""
    path = tmp_path / "tuning.json"
    monkeypatch.setenv("JAX_NA_TUNING_CACHE", str(path))
    monkeypatch.delenv("JAX_NA_TUNING", raising=False)

    def write(direction_to_backend: dict, q):
        params = make_params(q, q, q, KERNEL)
        kind = jax.devices("cpu")[0].device_kind
        entries = {tuning.tuning_key(kind, d, q.shape, q.shape[-2], q.dtype.name, params.kernel_size,
                                     params.stride, params.dilation, params.is_causal): {"backend": b}
                   for d, b in direction_to_backend.items()}
        path.write_text(json.dumps({"version": tuning.CACHE_VERSION, "entries": entries}))
        tuning._entries.cache_clear()

    yield write
    tuning._entries.cache_clear()


def test_cached_choice_is_used_and_correct(cache):
    q = jax.random.normal(jax.random.PRNGKey(0), SHAPE)
    f = lambda q: jax_na.na2d(q, q, q, KERNEL)  # noqa: E731
    cache({}, q)
    assert "jax_na_fwd_cpu" in _hlo(f, q)  # no entry: the default (native CPU kernel)
    cache({"fwd": "reference", "bwd": "cpu"}, q)
    g = lambda q: jax.grad(lambda q: jnp.sum(f(q) ** 2))(q)  # noqa: E731
    text = _hlo(g, q)
    assert "jax_na_fwd_cpu" not in text and "jax_na_bwd_cpu" in text
    want = reference.na_reference(q, q, q, make_params(q, q, q, KERNEL))[0]
    np.testing.assert_allclose(np.asarray(f(q)), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_entry_for_another_platform_is_ignored(cache):
    q = jax.random.normal(jax.random.PRNGKey(1), SHAPE)
    cache({"fwd": "cuda-fused"}, q)
    assert "jax_na_fwd_cpu" in _hlo(lambda q: jax_na.na2d(q, q, q, KERNEL), q)


def test_switched_off(cache, monkeypatch):
    q = jax.random.normal(jax.random.PRNGKey(2), SHAPE)
    cache({"fwd": "reference"}, q)
    monkeypatch.setenv("JAX_NA_TUNING", "0")
    tuning._entries.cache_clear()
    assert "jax_na_fwd_cpu" in _hlo(lambda q: jax_na.na2d(q, q, q, KERNEL), q)
