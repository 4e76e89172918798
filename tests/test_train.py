"""The training example: a few steps lower the loss, Orbax checkpoints round-trip, and the
command line runs end to end with resume (on a micro preset, to keep the test fast)."""

import importlib.util
import json
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest

for _module in ("flax", "optax", "orbax.checkpoint", "sklearn", "tqdm", "matplotlib"):
    pytest.importorskip(_module)
from flax import nnx  # noqa: E402

from jax_na.flax.models import PRESETS, create_model  # noqa: E402


_spec = importlib.util.spec_from_file_location("train_nat", Path(__file__).parents[1] / "examples" / "train_nat.py")
train_nat = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_nat)

# Small enough to compile in seconds: 16x16 inputs -> 4x4 and 2x2 token maps.
MICRO = dict(embed_dim=16, depths=(1, 1), num_heads=(2, 2), mlp_ratio=2.0, kernel_size=3,
             drop_path_rate=0.1, dilated=True, img_size=16)


@pytest.fixture(autouse=True)
def micro_preset(monkeypatch):
    monkeypatch.setitem(PRESETS, "micro", MICRO)


def _digits(n=32):
    x_tr, y_tr, *_ = train_nat.load_data(None, 16)
    return x_tr[:n], y_tr[:n]


def test_loss_falls_in_a_few_steps():
    model = create_model("micro", rngs=nnx.Rngs(0), in_chans=1, num_classes=10)
    tx = train_nat.make_optimizer(1e-2, 0.0, warmup_steps=1, total_steps=1000)[0]
    params = nnx.state(model, nnx.Param)
    opt_state = tx.init(params)
    train_step, eval_step = train_nat.make_steps(model, tx)
    x, y = _digits()
    losses = []
    for step in range(15):
        params, opt_state, loss, _ = train_step(params, opt_state, x, y, jax.random.key(step))
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    assert int(eval_step(params, x, y, np.ones(len(y), bool))) > 3  # better than chance on seen data


def test_checkpoint_round_trip(tmp_path):
    model = create_model("micro", rngs=nnx.Rngs(1), in_chans=1, num_classes=10)
    tx = train_nat.make_optimizer(1e-3, 0.05, 2, 10)[0]
    params = nnx.state(model, nnx.Param)
    opt_state = tx.init(params)
    opt_state = jax.tree.map(lambda a: a + 1 if a.dtype == np.float32 else a, opt_state)  # non-trivial
    history = {"epoch": [1], "test_acc": [0.5]}
    manager = train_nat.checkpoint_manager(tmp_path / "ckpt")
    train_nat.save_checkpoint(manager, 3, params, opt_state, history)
    manager.wait_until_finished()

    fresh = nnx.state(create_model("micro", rngs=nnx.Rngs(2), in_chans=1, num_classes=10), nnx.Param)
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    epoch, p2, o2, h2 = train_nat.restore_checkpoint(
        train_nat.checkpoint_manager(tmp_path / "ckpt"), fresh, tx.init(fresh), sharding
    )
    assert epoch == 3 and h2 == history
    for a, b in zip(jax.tree.leaves((params, opt_state)), jax.tree.leaves((p2, o2))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert jax.tree.structure(p2) == jax.tree.structure(params)


def test_command_line_with_resume(tmp_path, capsys):
    common = ["--model", "micro", "--img-size", "16", "--batch-size", "32", "--max-steps-per-epoch", "3",
              "--ckpt-dir", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out")]
    train_nat.main(common + ["--epochs", "1"])
    with pytest.raises(SystemExit, match="--resume"):  # never silently overwrite checkpoints
        train_nat.main(common + ["--epochs", "2"])
    train_nat.main(common + ["--epochs", "2", "--resume", "--bf16"])
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["history"]["epoch"] == [1, 2] and len(metrics["history"]["step"]) == 6
    assert 0.0 <= metrics["held_out_accuracy"] <= 1.0
    assert (tmp_path / "out" / "training_curves.png").stat().st_size > 1000
    assert "held-out accuracy" in capsys.readouterr().out.splitlines()[-1]


def test_data_loaders_for_image_folders_and_cifar(tmp_path):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (20, 12), (40 * i, 100, 200)).save(tmp_path / "folder" / label / f"{i}.png")
    x_tr, y_tr, x_te, y_te, names = train_nat.load_data(str(tmp_path / "folder"), 16)
    assert names == ["cat", "dog"] and x_tr.shape[1:] == (16, 16, 3) and len(x_tr) + len(x_te) == 10
    assert set(y_te) == {0, 1}  # stratified: every class is held out

    cifar = tmp_path / "cifar-10-batches-py"
    cifar.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 6), ("data_batch_2", 4), ("test_batch", 3)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}
        with open(cifar / name, "wb") as f:
            pickle.dump(batch, f)
    x_tr, y_tr, x_te, y_te, names = train_nat.load_data(str(tmp_path), 32)
    assert x_tr.shape == (10, 32, 32, 3) and x_te.shape == (3, 32, 32, 3) and len(names) == 10
    assert abs(float(x_tr.mean())) < 1e-4  # standardised with the training split's statistics
