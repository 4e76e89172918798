"""NAT / DiNAT models: published preset settings, DiNAT's dilation schedule, shapes, dtypes."""

import jax
import jax.numpy as jnp
import pytest

pytest.importorskip("flax")
from flax import nnx  # noqa: E402

from jax_na.flax.models import NATConfig, PRESETS, create_model  # noqa: E402

# Published ImageNet-1k parameter counts (millions). Ours lack the relative positional bias
# (a few thousand parameters), so they agree to well within 5%.
PUBLISHED_PARAMS_M = {"nat_mini": 20, "nat_tiny": 28, "dinat_mini": 20, "dinat_tiny": 28}


def _param_count(model):
    return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_published_presets():
    for name in ("nat_mini", "nat_tiny", "dinat_mini", "dinat_tiny"):
        cfg = NATConfig(**PRESETS[name])
        assert (cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.kernel_size) == (64, (2, 4, 8, 16), 3.0, 7)
        assert cfg.depths == ((3, 4, 6, 5) if "mini" in name else (3, 4, 18, 5))
        assert cfg.dilated == name.startswith("dinat")
    # Abstract construction: shapes only, no 20M-parameter initialisation.
    mini = nnx.eval_shape(lambda: create_model("nat_mini", rngs=nnx.Rngs(0)))
    # tiny is mini with 12 more stage-3 blocks (DiNAT's dilation adds no parameters).
    tiny = _param_count(mini) + 12 * _param_count(mini.stages[2][0])
    for name, count in (("nat_mini", _param_count(mini)), ("nat_tiny", tiny)):
        assert abs(count / 1e6 - PUBLISHED_PARAMS_M[name]) / PUBLISHED_PARAMS_M[name] < 0.05, (name, count)


def test_dinat_dilation_schedule_matches_published():
    mini = [[d[0] for d in stage] for stage in NATConfig(**PRESETS["dinat_mini"]).dilations()]
    assert mini == [[1, 8, 1], [1, 4, 1, 4], [1, 2, 1, 2, 1, 2], [1, 1, 1, 1, 1]]
    tiny = [[d[0] for d in stage] for stage in NATConfig(**PRESETS["dinat_tiny"]).dilations()]
    assert tiny[2] == [1, 2] * 9 and tiny[0] == [1, 8, 1]
    assert all(d == (1, 1) for stage in NATConfig(**PRESETS["nat_mini"]).dilations() for d in stage)
    # Non-square inputs get a dilation per dimension; kernels shrink to small maps.
    cfg = NATConfig(**{**PRESETS["dinat_mini"], "img_size": (224, 112)})
    assert cfg.dilations()[0][1] == (8, 4)
    assert cfg.stage_kernels()[3] == (7, 4)


def test_tiny_model_shapes_dtypes_and_features():
    model = create_model("tiny", rngs=nnx.Rngs(0), in_chans=1, num_classes=10, dtype=jnp.bfloat16)
    assert model.stages[0][1].attn.config.dilation == (2, 2)  # DiNAT-style: 3 * 2 <= 8
    x = jnp.ones((2, 32, 32, 1))

    logits = nnx.jit(lambda m, x: m(x, deterministic=True))(model, x)
    assert logits.shape == (2, 10) and logits.dtype == jnp.bfloat16
    feats = nnx.eval_shape(lambda m, x: m.forward_features(x, deterministic=True), model, x)
    assert [f.shape for f in feats] == [(2, 8, 8, 32), (2, 4, 4, 64)]
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="too small"):
        create_model("nat_mini", rngs=nnx.Rngs(0), img_size=32)  # stage 4 would be 1x1
    with pytest.raises(ValueError, match="unknown model"):
        create_model("nat_huge", rngs=nnx.Rngs(0))
