"""The Hopper forward's two softmax paths (cuda/hopper/mainloop.h: Consumer::next_p).

After a query tile's first key tile, the warp-specialised forward forms P against the rows'
running maxima as they stand, with no row max (fused::OnlineSoftmax::scores_at_max), and keeps
that only where each thread's partial sums of P stay within 2^8; otherwise it redoes the tile
through the exact update from S. Random inputs almost never leave the fast path after the first
tile (A2: 1408 of 5.9 M warp-tiles), so these inputs are built to leave it: scores that rise
along the keys by more than 2^3 per tile (every later tile takes the exact path), and one key
whose score lies ~350 log2 units above the rest (the fast path's P overflows to Inf there).
out and lse are checked against the float64 dense-mask oracle on the inputs as rounded to the
dtype.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from . import problems as P
from .test_gpu import _check


# Head dims 64 and 128 take the warp-specialised kernel (head_dim 32 the cp.async one); 1-D
# windows of 4-5 key tiles of 128, 2-D windows of several key tiles per row of tiles.
CASES = {
    "1d-d64": P.problem((1024,), 511, heads=2, heads_kv=2, head_dim=64),
    "1d-d128-gqa": P.problem((768,), 383, heads=4, heads_kv=2, head_dim=128),
    "2d-d128": P.problem((40, 48), 31, heads=2, heads_kv=2, head_dim=128),
    # 128-key tiles; bfloat16 masks them by the tensor core (cuda/hopper kBias: masked scores
    # are -2^126, not -inf: a row whose first tile holds none of its keys starts from a finite
    # max that the next tile must replace).
    "2d-d128-wide": P.problem((72, 96), (40, 70), head_dim=128),
}


def _rising(p: P.Problem, rng) -> P.Inputs:
    """Queries near the all-ones direction, keys along it growing with their position: each row's
    scores rise by ~6 log2 units per 128 keys (the fast path's partial sums exceed 2^8)."""
    x = P.make_inputs(p, rng)
    n = int(np.prod(p.spatial))
    pos = (np.arange(n, dtype=np.float32) / n).reshape(p.spatial)
    ramp = pos[None, ..., None, None] * 4.0 * 1024.0 / (n * np.sqrt(p.head_dim / 64.0))
    x.q = (1.0 + 0.1 * x.q).astype(np.float32)
    x.k = (ramp + 0.1 * x.k).astype(np.float32)
    return x


def _jump(p: P.Problem, rng) -> P.Inputs:
    """Random inputs plus one key, in the middle of the token layout, whose score is ~350 log2
    units above the others' for every query (fast-path P overflows to Inf)."""
    x = P.make_inputs(p, rng)
    x.q = (1.0 + 0.1 * x.q).astype(np.float32)
    mid = tuple(e // 2 for e in p.spatial)
    x.k[(0,) + mid] = 30.0 * np.sqrt(64.0 / p.head_dim)
    return x


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [P.BF16, P.F16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("inputs", [_rising, _jump], ids=["rising", "jump"])
@pytest.mark.parametrize("name", list(CASES))
def test_exact_path_vs_oracle(name, inputs, dtype):
    P.skip_unless_runs("cuda-hopper")
    p = CASES[name]
    x = inputs(p, np.random.default_rng(P.stable_seed(name, inputs.__name__)))
    got = P.run(p, x, "cuda-hopper", dtype, grads=False)
    want = P.run_oracle(p, x.rounded(dtype), grads=False)
    _check(got, want, dtype, f"cuda-hopper {inputs.__name__} {name} {jnp.dtype(dtype).name} [{p.short()}]")


def _log2_scores(p: P.Problem, x: P.Inputs) -> np.ndarray:
    """Scaled scores of a 1-D problem in log2 units, [batch, head, query, key], in float64."""
    s = np.einsum("bthd,buhd->bhtu", x.q.astype(np.float64), x.k.astype(np.float64))
    return s * p.resolved_scale * np.log2(np.e)


def test_inputs_leave_the_fast_path():
    """The inputs do what the docstring says (host-side, float64): the rising rows' maxima grow
    by more than 2^3 per 128 keys, and the jump key sits more than 128 log2 units above the
    rest of its queries' scores."""
    rng = np.random.default_rng(0)
    p = CASES["1d-d64"]
    x2 = _log2_scores(p, _rising(p, rng))
    q0 = 300  # a query whose window [45, 556) spans 4 key tiles
    tile_max = [x2[0, 0, q0, t:t + 128].max() for t in range(128, 512, 128)]
    assert min(np.diff(tile_max)) > 3.0, tile_max
    x2 = _log2_scores(p, _jump(p, rng))
    mid = p.spatial[0] // 2
    others = np.delete(x2[0, 0, mid], mid)
    assert x2[0, 0, mid, mid] - others.max() > 128.0
