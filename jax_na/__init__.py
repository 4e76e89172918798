"""jax_na: neighborhood attention for JAX (NATTEN semantics), with CPU and CUDA kernels."""

from .api import na1d, na2d, na3d, neighborhood_attention
from .backends import BACKENDS
from .halo_exchange import spatial_parallel
from .merge import merge_attentions
from .params import NAParams
from ._native import available_families

__version__ = "0.1.0"

__all__ = [
    "na1d",
    "na2d",
    "na3d",
    "neighborhood_attention",
    "merge_attentions",
    "spatial_parallel",
    "NAParams",
    "BACKENDS",
    "available_families",
    "__version__",
]
