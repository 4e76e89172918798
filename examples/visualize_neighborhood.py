"""Draw the keys one query attends to, as a PNG (a thin CLI over jax_na.visualize).

    python examples/visualize_neighborhood.py --shape 12 12 --query 0 5 --kernel-size 3 --dilation 2
    python examples/visualize_neighborhood.py --shape 16 --query 3 --kernel-size 4 --causal
"""

import argparse
import sys
from pathlib import Path

try:
    from jax_na.visualize import plot_neighborhood
except ImportError:  # running from a source checkout without `pip install`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jax_na.visualize import plot_neighborhood


def _one_or_tuple(values):
    return values[0] if len(values) == 1 else tuple(values)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", type=int, nargs="+", required=True, help="grid extents (1 or 2 numbers)")
    p.add_argument("--query", type=int, nargs="+", required=True, help="query coordinate, one per extent")
    p.add_argument("--kernel-size", type=int, nargs="+", required=True)
    p.add_argument("--stride", type=int, nargs="+", default=[1])
    p.add_argument("--dilation", type=int, nargs="+", default=[1])
    p.add_argument("--causal", action="store_true", help="causal in every dimension")
    p.add_argument("--out", default="neighborhood.png")
    a = p.parse_args(argv)
    plot_neighborhood(
        tuple(a.shape), tuple(a.query), _one_or_tuple(a.kernel_size), stride=_one_or_tuple(a.stride),
        dilation=_one_or_tuple(a.dilation), is_causal=a.causal, path=a.out,
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
