"""jax_na.visualize: the PNG's highlighted cells are exactly neighbor_table's neighbours."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.image import imread  # noqa: E402

from jax_na import visualize  # noqa: E402
from jax_na.reference import neighbor_table  # noqa: E402

CASES = [
    # shape, query, kernel, stride, dilation, causal
    ((10, 12), (0, 5), 3, (1, 2), 2, False),
    ((9, 9), (7, 2), (4, 3), 2, (1, 3), (True, False)),
    ((16,), (3,), 4, 1, 2, True),
    ((11,), (10,), 5, 3, 1, False),
]


def _expected(shape, query, kernel, stride, dilation, causal):
    per_dim = lambda v, i: v[i] if isinstance(v, tuple) else v  # noqa: E731
    mask = np.ones((), bool)
    for i, (extent, q) in enumerate(zip(shape, query)):
        coords, valid = neighbor_table(extent, per_dim(kernel, i), per_dim(stride, i), per_dim(dilation, i), per_dim(causal, i))
        axis = np.zeros(extent, bool)
        axis[coords[q][valid[q]]] = True
        mask = np.logical_and.outer(mask, axis) if mask.ndim else axis
    return mask


@pytest.mark.parametrize("shape,query,kernel,stride,dilation,causal", CASES)
def test_png_cells_match_neighbor_table(tmp_path, shape, query, kernel, stride, dilation, causal):
    path = tmp_path / "na.png"
    fig = visualize.plot_neighborhood(shape, query, kernel, stride=stride, dilation=dilation, is_causal=causal, path=path)
    want = _expected(shape, query, kernel, stride, dilation, causal)
    np.testing.assert_array_equal(
        visualize.neighborhood_mask(shape, query, kernel, stride=stride, dilation=dilation, is_causal=causal), want
    )

    png = imread(path)[..., :3]
    ax = fig.axes[0]
    grid = want.reshape(1, -1) if want.ndim == 1 else want
    height = png.shape[0]
    seen = np.zeros(grid.shape, bool)
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            x, y = ax.transData.transform((c, r))  # display pixels, origin bottom-left
            colour = png[int(round(height - y)), int(round(x))]
            dist = lambda ref: np.abs(colour - np.asarray(ref)).max()  # noqa: E731
            assert min(dist(visualize.OTHER), dist(visualize.NEIGHBOR), dist(visualize.QUERY_NEIGHBOR),
                       dist(visualize.QUERY_ONLY)) < 0.02, f"cell {(r, c)} has an unexpected colour {colour}"
            seen[r, c] = dist(visualize.NEIGHBOR) < 0.02 or dist(visualize.QUERY_NEIGHBOR) < 0.02
    np.testing.assert_array_equal(seen, grid)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kernel_size"):
        visualize.plot_neighborhood((6, 6), (0, 0), 4, dilation=2)
    with pytest.raises(ValueError, match="query"):
        visualize.neighborhood_mask((6, 6), (6, 0), 3)
