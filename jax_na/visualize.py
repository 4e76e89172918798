"""Pictures of who attends to whom: the keys one query sees in a 1-D or 2-D grid.

The neighbourhood comes from `jax_na.reference.neighbor_table` (the window math's Python source
of truth) and the arguments are checked by `jax_na.params.make_params`, so the picture shows
exactly what the kernels compute.

    from jax_na.visualize import plot_neighborhood
    plot_neighborhood((12, 12), query=(0, 5), kernel_size=3, dilation=2, path="na.png")
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .params import make_params
from .reference import neighbor_table

# Cell colours (RGB). Tests read them back from the PNG.
OTHER = (0.91, 0.91, 0.91)
NEIGHBOR = (0.30, 0.45, 0.69)
QUERY_NEIGHBOR = (0.77, 0.31, 0.32)  # the query, which is one of its own keys
QUERY_ONLY = (0.95, 0.70, 0.45)  # the query, not among its own keys


def _normalise(shape, query, kernel_size, stride, dilation, is_causal):
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    query = (query,) if isinstance(query, int) else tuple(int(q) for q in query)
    if len(shape) not in (1, 2, 3):
        raise ValueError(f"shape must have 1, 2 or 3 extents, got {shape}")
    if len(query) != len(shape) or not all(0 <= q < s for q, s in zip(query, shape)):
        raise ValueError(f"query must be a coordinate inside shape {shape}, got {query}")
    # make_params only reads .shape/.dtype: abstract arrays give its checks without data.
    x = jax.ShapeDtypeStruct((1, *shape, 1, 1), jnp.float32)
    params = make_params(x, x, x, kernel_size, stride, dilation, is_causal)
    return shape, query, params


def _tables(shape, params):
    return [
        neighbor_table(shape[i], params.kernel_size[i], params.stride[i], params.dilation[i], params.is_causal[i])
        for i in range(len(shape))
    ]


def neighborhood_mask(shape, query, kernel_size, *, stride=1, dilation=1, is_causal=False) -> np.ndarray:
    """Boolean array of `shape`: True at the keys `query` attends to."""
    shape, query, params = _normalise(shape, query, kernel_size, stride, dilation, is_causal)
    mask = np.ones((), bool)
    for i, (coords, valid) in enumerate(_tables(shape, params)):
        axis = np.zeros(shape[i], bool)
        axis[coords[query[i]][valid[query[i]]]] = True
        mask = np.logical_and.outer(mask, axis) if mask.ndim else axis
    return mask


def sharing_queries(shape, query, kernel_size, *, stride=1, dilation=1, is_causal=False) -> np.ndarray:
    """Boolean array of `shape`: True at the queries with exactly the same keys as `query`
    (its stride group, plus any border queries the window clamping gives the same window)."""
    shape, query, params = _normalise(shape, query, kernel_size, stride, dilation, is_causal)
    same = np.ones((), bool)
    for i, (coords, valid) in enumerate(_tables(shape, params)):
        keys = np.where(valid, coords, -1)
        axis = (keys == keys[query[i]]).all(axis=1)
        same = np.logical_and.outer(same, axis) if same.ndim else axis
    return same


def plot_neighborhood(
    shape: int | Sequence[int],
    query: int | Sequence[int],
    kernel_size,
    *,
    stride=1,
    dilation=1,
    is_causal=False,
    path=None,
    title: str | None = None,
    cell_inches: float = 0.32,
    dpi: int = 100,
):
    """Draw the keys `query` attends to in a 1-D (a row of cells) or 2-D grid; save a PNG to
    `path` if given. Cells of queries sharing this neighbourhood get a dashed outline.
    Returns the matplotlib Figure (drawn with the Agg backend, no display needed)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    shape, query, params = _normalise(shape, query, kernel_size, stride, dilation, is_causal)
    if len(shape) == 3:
        raise ValueError("plot_neighborhood draws 1-D and 2-D grids; use neighborhood_mask for 3-D")
    args = dict(stride=stride, dilation=dilation, is_causal=is_causal)
    keys = neighborhood_mask(shape, query, kernel_size, **args)
    sharing = sharing_queries(shape, query, kernel_size, **args)
    grid = lambda a: a.reshape(1, -1) if a.ndim == 1 else a  # noqa: E731  1-D -> one row
    keys, sharing = grid(keys), grid(sharing)
    row, col = (0, query[0]) if len(shape) == 1 else query

    img = np.empty(keys.shape + (3,))
    img[:] = OTHER
    img[keys] = NEIGHBOR
    img[row, col] = QUERY_NEIGHBOR if keys[row, col] else QUERY_ONLY

    h, w = keys.shape
    fig = Figure(figsize=(max(4.0, w * cell_inches + 1.2), max(2.2, h * cell_inches + 1.6)), dpi=dpi,
                 layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(img, interpolation="nearest", origin="upper")
    ax.set_xticks(np.arange(-0.5, w, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, h, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    step = max(1, w // 16)
    ax.set_xticks(np.arange(0, w, step))
    ax.set_yticks(np.arange(0, h, max(1, h // 16)) if len(shape) == 2 else [])
    for r, c in zip(*np.nonzero(sharing)):
        if (r, c) != (row, col):
            ax.add_patch(Rectangle((c - 0.42, r - 0.42), 0.84, 0.84, fill=False, ls="--", lw=1.0, ec="black"))

    def fmt(v):
        return str(v[0]) if len(set(v)) == 1 else str(v)

    ax.set_title(title or (
        f"query {query if len(query) > 1 else query[0]}: {int(keys.sum())} keys | kernel {fmt(params.kernel_size)}, "
        f"dilation {fmt(params.dilation)}, stride {fmt(params.stride)}, causal {fmt(params.is_causal)}"
    ), fontsize=9)
    handles = [Patch(color=NEIGHBOR, label="key"), Patch(color=QUERY_NEIGHBOR if keys[row, col] else QUERY_ONLY, label="query"),
               Patch(fill=False, ls="--", ec="black", label="same keys")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
