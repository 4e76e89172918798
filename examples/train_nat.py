"""Train a NAT / DiNAT classifier with jax_na.

    python examples/train_nat.py                      # tiny DiNAT on sklearn's digits, CPU-friendly
    python examples/train_nat.py --model nat_mini --data ~/cifar-10-batches-py --img-size 64 --bf16

Data: scikit-learn's bundled 8x8 digits (no download), upsampled to --img-size; or --data PATH:
a folder of images in one subfolder per class, or CIFAR-10's python batches. Data-parallel over
all local devices (batch sharded over a Mesh, parameters replicated). Writes training curves
(PNG) and metrics (JSON) to --out; Orbax checkpoints to --ckpt-dir (--resume continues).
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # wall time counts from here: imports and JIT compilation included
# ruff: noqa: E402  (the imports below come after _T0 on purpose)

import argparse
import json
import pickle
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

try:
    import jax_na
except ImportError:  # running from a source checkout without `pip install`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import jax_na
from jax_na.flax.models import PRESETS, create_model

# ------------------------------------------------------------------------------ data


def _normalise(train, test):
    """Per-channel standardisation with the training split's statistics."""
    mean = train.mean(axis=(0, 1, 2), keepdims=True)
    std = train.std(axis=(0, 1, 2), keepdims=True) + 1e-6
    return (train - mean) / std, (test - mean) / std


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1:3] == (size, size):
        return images
    out = jax.image.resize(jnp.asarray(images), (images.shape[0], size, size, images.shape[3]), "linear")
    return np.asarray(out)


def _split(x, y, held_out: float, seed: int):
    """A stratified random split (the same for every --seed: evaluation stays comparable)."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[: max(1, round(held_out * len(idx)))]] = True
    return x[~test], y[~test], x[test], y[test]


def load_digits(size: int, held_out: float = 0.2):
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]  # [N, 8, 8, 1] in [0, 1]
    return _split(_resize(x, size), d.target.astype(np.int32), held_out, seed=0) + ([str(i) for i in range(10)],)


def load_cifar10(path: Path, size: int):
    def read(name):
        with open(path / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return x.astype(np.float32) / 255.0, np.asarray(batch[b"labels"], np.int32)

    parts = [read(f"data_batch_{i}") for i in range(1, 6) if (path / f"data_batch_{i}").exists()]
    x_tr, y_tr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    x_te, y_te = read("test_batch")
    names = [str(i) for i in range(10)]
    if (path / "batches.meta").exists():
        with open(path / "batches.meta", "rb") as f:
            names = [n.decode() for n in pickle.load(f, encoding="bytes")[b"label_names"]]
    return _resize(x_tr, size), y_tr, _resize(x_te, size), y_te, names


def load_folder(path: Path, size: int, held_out: float = 0.2):
    from PIL import Image

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if not classes:
        raise SystemExit(f"--data {path}: expected one subfolder of images per class")
    xs, ys = [], []
    for label, name in enumerate(classes):
        for f in sorted((path / name).iterdir()):
            try:
                img = Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR)
            except OSError:  # not an image
                continue
            xs.append(np.asarray(img, np.float32) / 255.0)
            ys.append(label)
    return _split(np.stack(xs), np.asarray(ys, np.int32), held_out, seed=0) + (classes,)


def augment(x: np.ndarray, rng: np.random.Generator, flip: bool) -> np.ndarray:
    """Random translation by up to size/16 pixels (edge padding), and horizontal flips if asked."""
    n, h, w, _ = x.shape
    pad = max(1, h // 16)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    rows = rng.integers(0, 2 * pad + 1, n)[:, None] + np.arange(h)
    cols = rng.integers(0, 2 * pad + 1, n)[:, None] + np.arange(w)
    out = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if flip:
        flipped = rng.random(n) < 0.5
        out[flipped] = out[flipped, :, ::-1]
    return out


def load_data(data: str | None, size: int):
    """(x_train, y_train, x_test, y_test, class_names); images [N, size, size, C] float32."""
    if data is None:
        x_tr, y_tr, x_te, y_te, names = load_digits(size)
    else:
        path = Path(data).expanduser()
        if (path / "cifar-10-batches-py").is_dir():
            path = path / "cifar-10-batches-py"
        loader = load_cifar10 if (path / "data_batch_1").exists() else load_folder
        x_tr, y_tr, x_te, y_te, names = loader(path, size)
    x_tr, x_te = _normalise(x_tr, x_te)
    return x_tr, y_tr, x_te, y_te, names


# ------------------------------------------------------------------------------ training


def make_optimizer(lr: float, weight_decay: float, warmup_steps: int, total_steps: int):
    """AdamW on a warmup-cosine schedule; no weight decay on biases and norm scales."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, max(1, warmup_steps), max(total_steps, warmup_steps + 1), end_value=lr * 1e-2
    )
    decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=weight_decay, mask=decay_mask))
    return tx, schedule


def make_steps(model: nnx.Module, tx):
    """Jitted (train_step, eval_step) on the functional (graphdef, params, rest) form of `model`.

    Data parallelism is "computation follows data": the batch arrives sharded over the mesh's
    "data" axis and the parameters replicated, so XLA runs each device on its slice of the
    batch (jax_na's sharding rules keep the attention local) and all-reduces the gradients.
    """
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params, x, y, key):
        model = nnx.merge(graphdef, params, rest)
        logits = model(x, deterministic=False, rngs=nnx.Rngs(dropout=key)).astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    donate = () if jax.default_backend() == "cpu" else (0, 1)  # CPU cannot donate: avoid the warning

    @partial(jax.jit, donate_argnums=donate)
    def train_step(params, opt_state, x, y, key):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    @jax.jit
    def eval_step(params, x, y, valid):
        logits = nnx.merge(graphdef, params, rest)(x, deterministic=True)
        return jnp.sum((jnp.argmax(logits, -1) == y) & valid)

    return train_step, eval_step


def evaluate(eval_step, params, x, y, batch: int, sharding) -> float:
    """Accuracy over all of (x, y); the last batch is padded and masked."""
    correct = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i : i + batch], y[i : i + batch]
        n = len(xb)
        valid = np.arange(batch) < n
        xb = np.concatenate([xb, np.zeros((batch - n,) + xb.shape[1:], xb.dtype)])
        yb = np.concatenate([yb, np.zeros(batch - n, yb.dtype)])
        put = lambda a: jax.device_put(a, sharding)  # noqa: E731
        correct += int(eval_step(params, put(xb), put(yb), put(valid)))
    return correct / len(x)


# ------------------------------------------------------------------------------ checkpoints


def checkpoint_manager(directory):
    import orbax.checkpoint as ocp

    opts = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(Path(directory).expanduser().resolve(), options=opts)


def save_checkpoint(manager, epoch: int, params, opt_state, history: dict):
    import orbax.checkpoint as ocp

    state = {"params": params, "opt_state": opt_state}
    manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state), history=ocp.args.JsonSave(history)))


def restore_checkpoint(manager, params, opt_state, sharding):
    """(epoch, params, opt_state, history) of the latest checkpoint, placed with `sharding`."""
    import orbax.checkpoint as ocp

    epoch = manager.latest_step()
    target = {"params": params, "opt_state": opt_state}
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), target)
    got = manager.restore(
        epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), history=ocp.args.JsonRestore())
    )
    return epoch, got["state"]["params"], got["state"]["opt_state"], got["history"]


# ------------------------------------------------------------------------------ plot


def plot_curves(history: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps, loss = history["step"], history["train_loss"]
    ax1.plot(steps, loss, lw=0.8, alpha=0.4, label="per step")
    if len(loss) >= 10:  # a running mean shows the trend through the noise
        w = max(5, len(loss) // 25)
        ax1.plot(steps[w - 1 :], np.convolve(loss, np.ones(w) / w, "valid"), label=f"mean of {w}")
    ax1.set(xlabel="step", ylabel="training loss", yscale="log", title="loss")
    ax1.legend()
    ax2.plot(history["epoch"], history["train_acc"], marker="o", label="train")
    ax2.plot(history["epoch"], history["test_acc"], marker="o", label="held-out")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--data", default=None, help="image folder (one subfolder per class) or CIFAR-10 python batches; default: sklearn digits")
    p.add_argument("--img-size", type=int, default=None, help="input size (default 32 for tiny, 64 otherwise)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32, help="global batch, split over the devices")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--drop-path", type=float, default=None, help="stochastic depth rate (default: the preset's)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random shifts (and flips for --data images) of the training batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="compute in bfloat16 (parameters stay float32)")
    p.add_argument("--backend", default=None, choices=jax_na.BACKENDS, help="jax_na backend (default: fastest available)")
    p.add_argument("--out", default="out/train_nat", help="folder for the curves PNG and metrics JSON")
    p.add_argument("--ckpt-dir", default=None, help="save an Orbax checkpoint here after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --ckpt-dir")
    p.add_argument("--max-steps-per-epoch", type=int, default=None, help=argparse.SUPPRESS)  # for tests
    return p.parse_args(argv)


def attention_path(backend) -> str:
    if backend is not None:
        return backend
    native = [f for f in jax_na.available_families() if (f == "cpu") == (jax.default_backend() == "cpu")]
    if not native:
        return "auto -> XLA fallback (no native kernel built)"
    # On CUDA the family is chosen per call from dtype and head_dim (jax_na.backends.family_for).
    return f"auto -> {native[0]} kernel" if len(native) == 1 else f"auto -> one of {'/'.join(native)} per call"


def train(args, t_start: float | None = None) -> dict:
    """Runs the whole training; returns the metrics that metrics.json holds."""
    t_start = time.perf_counter() if t_start is None else t_start
    manager = None
    if args.resume and not args.ckpt_dir:
        raise SystemExit("--resume needs --ckpt-dir")
    if args.ckpt_dir:
        manager = checkpoint_manager(args.ckpt_dir)
        if manager.latest_step() is not None and not args.resume:
            raise SystemExit(f"{args.ckpt_dir} already holds checkpoints: pass --resume, or choose a new --ckpt-dir")
    img_size = args.img_size or (32 if args.model == "tiny" else 64)
    x_tr, y_tr, x_te, y_te, names = load_data(args.data, img_size)

    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("data",))
    batch_sharded, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    batch = max(len(devices), args.batch_size // len(devices) * len(devices))
    steps_per_epoch = len(x_tr) // batch
    if steps_per_epoch == 0:
        raise SystemExit(f"--batch-size {batch} is larger than the training set ({len(x_tr)} images)")
    if args.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    total_steps = steps_per_epoch * args.epochs

    overrides = dict(img_size=img_size, in_chans=x_tr.shape[-1], num_classes=len(names), backend=args.backend)
    if args.bf16:
        overrides["dtype"] = jnp.bfloat16
    if args.drop_path is not None:
        overrides["drop_path_rate"] = args.drop_path
    # Initialise under jit: one compiled program instead of hundreds of eager ops.
    model = nnx.jit(lambda: create_model(args.model, rngs=nnx.Rngs(args.seed), **overrides))()
    tx, schedule = make_optimizer(args.lr, args.weight_decay, int(args.warmup_epochs * steps_per_epoch), total_steps)
    params = jax.device_put(nnx.state(model, nnx.Param), replicated)
    opt_state = jax.jit(tx.init, out_shardings=replicated)(params)
    train_step, eval_step = make_steps(model, tx)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))

    history = {"step": [], "train_loss": [], "epoch": [], "train_acc": [], "test_acc": [], "images_per_s": []}
    start_epoch = 0
    if manager is not None and manager.latest_step() is not None:
        start_epoch, params, opt_state, history = restore_checkpoint(manager, params, opt_state, replicated)

    print(
        f"{args.model}: {n_params / 1e3:.1f}k params | {len(x_tr)} train / {len(x_te)} held-out images "
        f"{img_size}x{img_size}x{x_tr.shape[-1]}, {len(names)} classes | batch {batch} on {len(devices)} "
        f"{devices[0].platform} device(s) | {'bf16' if args.bf16 else 'fp32'} | attention: {attention_path(args.backend)}"
    )
    base_key = jax.random.key(args.seed)
    train_images, train_time = 0, 0.0
    bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, unit="step", dynamic_ncols=True)
    for epoch in range(start_epoch, args.epochs):
        rng = np.random.default_rng([args.seed, epoch])
        order = rng.permutation(len(x_tr))
        epoch_loss, epoch_acc = [], []
        t_epoch = None
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            step = epoch * steps_per_epoch + i
            xb = augment(x_tr[idx], rng, flip=args.data is not None) if args.augment else x_tr[idx]
            xb, yb = jax.device_put((xb, y_tr[idx]), batch_sharded)
            params, opt_state, loss, acc = train_step(params, opt_state, xb, yb, jax.random.fold_in(base_key, step))
            loss, acc = float(loss), float(acc)  # the sync also makes the timing honest
            if t_epoch is None:  # time from the end of the first step: excludes compilation
                t_epoch = time.perf_counter()
            else:
                train_images += batch
            epoch_loss.append(loss)
            epoch_acc.append(acc)
            history["step"].append(step)
            history["train_loss"].append(loss)
            bar.update()
            if i % 5 == 0 or i == steps_per_epoch - 1:
                ips = train_images / (train_time + time.perf_counter() - t_epoch) if train_images else 0.0
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(epoch_loss[-10:]):.3f}",
                                acc=f"{np.mean(epoch_acc[-10:]):.3f}", img_s=f"{ips:.0f}", lr=f"{float(schedule(step)):.1e}")
        train_time += time.perf_counter() - t_epoch
        test_acc = evaluate(eval_step, params, x_te, y_te, batch, batch_sharded)
        history["epoch"].append(epoch + 1)
        history["train_acc"].append(float(np.mean(epoch_acc)))
        history["test_acc"].append(test_acc)
        history["images_per_s"].append(train_images / train_time if train_time else 0.0)
        bar.write(f"epoch {epoch + 1:3d}  loss {np.mean(epoch_loss):.4f}  train acc {np.mean(epoch_acc):.4f}  held-out acc {test_acc:.4f}")
        if manager is not None:
            save_checkpoint(manager, epoch + 1, params, opt_state, history)
    bar.close()
    if manager is not None:
        manager.wait_until_finished()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test_acc = history["test_acc"][-1] if history["test_acc"] else evaluate(eval_step, params, x_te, y_te, batch, batch_sharded)
    wall = time.perf_counter() - t_start
    ips = train_images / train_time if train_time else 0.0
    result = {
        "model": args.model, "params": n_params, "held_out_accuracy": test_acc, "wall_time_s": wall,
        "train_images_per_s": ips, "devices": len(devices), "platform": devices[0].platform,
        "attention": attention_path(args.backend), "bf16": args.bf16, "epochs": args.epochs, "history": history,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    if history["step"]:
        plot_curves(history, out / "training_curves.png")
    print(f"held-out accuracy {test_acc:.2%} | wall time {wall:.1f} s | {ips:.0f} images/s "
          f"({args.model}, {len(devices)} {devices[0].platform} device(s), attention: {attention_path(args.backend)}) "
          f"| curves: {out / 'training_curves.png'}")
    return result


def main(argv=None):
    train(parse_args(argv), t_start=_T0 if argv is None else None)


if __name__ == "__main__":
    main()
