"""Flax layers and models built on jax_na (needs `flax`; install the `flax` extra).

    from jax_na.flax import NeighborhoodAttention2D      # Flax NNX layer
    from jax_na.flax.linen import NeighborhoodAttention2D  # Flax Linen layer
    from jax_na.flax import dinat_mini, create_model      # NAT / DiNAT classifiers (NNX)
"""

from . import core, linen
from .models import NAT, NATConfig, PRESETS, create_model, dinat_mini, dinat_tiny, nat_mini, nat_tiny, tiny
from .nnx import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D

__all__ = [
    "NeighborhoodAttention1D",
    "NeighborhoodAttention2D",
    "NeighborhoodAttention3D",
    "linen",
    "core",
    "NAT",
    "NATConfig",
    "PRESETS",
    "create_model",
    "nat_mini",
    "nat_tiny",
    "dinat_mini",
    "dinat_tiny",
    "tiny",
]
