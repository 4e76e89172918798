"""Benchmark problems: shapes, work counts and the named suites.

A problem is one neighborhood-attention call, [batch, *spatial, heads, head_dim] (keys and values
with `kv_heads` heads). Work counts follow ../shared/benchmarks.md: forward FLOPs =
4·B·H·N·prod(kernel)·D (N = prod(spatial)), forward+backward = 3.5 × forward. Minimum bytes:
every input read once and every output written once.
"""

from __future__ import annotations

import dataclasses
import math

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DTYPE_ALIASES = {"f32": "float32", "fp32": "float32", "float32": "float32",
                 "bf16": "bfloat16", "bfloat16": "bfloat16",
                 "f16": "float16", "fp16": "float16", "float16": "float16"}
MODES = ("fwd", "fwd+bwd")  # "bwd" (the backward alone) is timed by the profiler
FLOP_FACTOR = {"fwd": 1.0, "fwd+bwd": 3.5, "bwd": 2.5}


@dataclasses.dataclass(frozen=True)
class Problem:
    name: str
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    causal: tuple[bool, ...]
    batch: int
    heads: int
    head_dim: int
    dtype: str = "bfloat16"
    kv_heads: int | None = None
    note: str = ""

    @property
    def rank(self) -> int:
        return len(self.spatial)

    @property
    def hkv(self) -> int:
        return self.kv_heads or self.heads

    @property
    def tokens(self) -> int:
        return math.prod(self.spatial)

    @property
    def itemsize(self) -> int:
        return DTYPE_BYTES[self.dtype]

    def q_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.spatial, self.heads, self.head_dim)

    def kv_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.spatial, self.hkv, self.head_dim)

    def flops(self, mode: str) -> float:
        fwd = 4.0 * self.batch * self.heads * self.tokens * math.prod(self.kernel) * self.head_dim
        return fwd * FLOP_FACTOR[mode]

    def tensor_bytes(self, kv: bool = False) -> int:
        return self.batch * self.tokens * (self.hkv if kv else self.heads) * self.head_dim * self.itemsize

    def min_bytes(self, mode: str) -> int:
        """Fewest bytes through device memory: inputs read once, outputs written once."""
        q, kv = self.tensor_bytes(), self.tensor_bytes(kv=True)
        lse = self.batch * self.tokens * self.heads * 4
        fwd = 2 * q + 2 * kv + lse  # read q, k, v; write out, lse
        bwd = 4 * q + 4 * kv + lse  # read q, k, v, out, dout, lse; write dq, dk, dv
        return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}[mode]

    def input_set_bytes(self) -> int:
        """q, k, v and the cotangent of one input set."""
        return 2 * self.tensor_bytes() + 2 * self.tensor_bytes(kv=True)

    def describe(self) -> str:
        x = lambda t: "×".join(str(int(v)) for v in t)  # noqa: E731
        parts = [f"B{self.batch}", x(self.spatial), f"H{self.heads}"
                 + (f"/{self.hkv}" if self.hkv != self.heads else ""), f"D{self.head_dim}",
                 f"k{x(self.kernel)}"]
        if any(s != 1 for s in self.stride):
            parts.append(f"s{x(self.stride)}")
        if any(d != 1 for d in self.dilation):
            parts.append(f"d{x(self.dilation)}")
        if any(self.causal):
            parts.append("causal" + ("" if all(self.causal) else "(" + "".join("1" if c else "0" for c in self.causal) + ")"))
        parts.append({"bfloat16": "bf16", "float32": "f32", "float16": "f16"}[self.dtype])
        return " ".join(parts)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["kv_heads"] = self.hkv
        d["describe"] = self.describe()
        return d


def make(name, spatial, kernel, *, stride=1, dilation=1, causal=False, batch=1, heads=1,
         head_dim=128, dtype="bfloat16", kv_heads=None, note="") -> Problem:
    rank = len(spatial)
    per = lambda v, f: tuple(f(x) for x in v) if isinstance(v, (tuple, list)) else (f(v),) * rank  # noqa: E731
    return Problem(name, tuple(int(s) for s in spatial), per(kernel, int), per(stride, int),
                   per(dilation, int), per(causal, bool), int(batch), int(heads), int(head_dim),
                   DTYPE_ALIASES[dtype], kv_heads, note)


# The anchor problems of shared/benchmarks.md (NATTEN's published H100 problems).
ANCHORS = (
    make("A1", (32768,), 2048, head_dim=128),
    make("A1s", (32768,), 2048, stride=256),
    make("A1c", (32768,), 2048, causal=True, heads=16, note="sliding-window LM"),
    make("A2", (256, 256), 80, heads=24, note="FLUX-like"),
    make("A2s", (256, 256), 80, stride=16, heads=24),
    make("A3", (30, 48, 80), (18, 24, 24), heads=24, note="video"),
    make("A3s", (30, 48, 80), (18, 24, 24), stride=(16, 8, 8), heads=24),
    make("V1", (56, 56), 7, batch=128, heads=2, head_dim=32, note="NAT stage 1"),
    make("V2", (56, 56), 7, dilation=8, batch=128, heads=2, head_dim=32, note="DiNAT stage 1"),
    # Targets of the CUDA issues: the blocked case of A1 (stride = kernel) and the 2-D problem
    # where FlexAttention manages 26 TF/s.
    make("A1b", (32768,), 2048, stride=2048, note="blocked (stride = kernel)"),
    make("K31", (128, 128), 31, heads=16, note="FlexAttention 26 TF/s"),
)

# NAT / DiNAT-like stages (tiny/small variants: 4 stages at 56², 28², 14², 7²; D=32; k=7).
VISION = (
    ANCHORS[7],
    ANCHORS[8],
    make("V3", (28, 28), 7, batch=128, heads=4, head_dim=32, note="NAT stage 2"),
    make("V4", (28, 28), 7, dilation=4, batch=128, heads=4, head_dim=32, note="DiNAT stage 2"),
    make("V5", (14, 14), 7, batch=128, heads=8, head_dim=32, note="NAT stage 3"),
    make("V6", (14, 14), 7, dilation=2, batch=128, heads=8, head_dim=32, note="DiNAT stage 3"),
)

# Seconds on a CPU, f32: for the README, tests and machines without a GPU.
QUICK = (
    make("Q1", (1024,), 31, batch=1, heads=2, head_dim=32, dtype="f32"),
    make("Q1c", (1024,), 31, causal=True, batch=1, heads=2, head_dim=32, dtype="f32"),
    make("Q2", (24, 24), 7, batch=1, heads=2, head_dim=32, dtype="f32"),
    make("Q2d", (24, 24), 5, stride=2, dilation=2, batch=1, heads=2, head_dim=32, dtype="f32"),
    make("Q3", (8, 12, 12), 3, batch=1, heads=2, head_dim=32, dtype="f32"),
)

SUITES = {"anchors": ANCHORS, "vision": VISION, "quick": QUICK}


def custom(dims, kernel, stride=None, dilation=None, causal=None, heads=1, head_dim=32, batch=1,
           dtype="bf16", kv_heads=None, name="custom") -> Problem:
    """A problem from command-line lists (one value, or one per spatial dim)."""
    rank = len(dims)
    if rank not in (1, 2, 3):
        raise ValueError(f"--dims takes 1 to 3 extents, got {dims}")

    def per(v, default, what):
        if v is None or len(v) == 0:
            return (default,) * rank
        if len(v) == 1:
            return tuple(v) * rank
        if len(v) != rank:
            raise ValueError(f"--{what} takes 1 or {rank} values (one per spatial dim), got {v}")
        return tuple(v)

    kernel = per(kernel, None, "kernel")
    if None in kernel:
        raise ValueError("--kernel is required with --dims")
    if dtype not in DTYPE_ALIASES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPE_ALIASES)}, got {dtype!r}")
    return make(name, tuple(dims), kernel, stride=per(stride, 1, "stride"),
                dilation=per(dilation, 1, "dilation"),
                causal=tuple(bool(int(c)) for c in per(causal, 0, "causal")),
                batch=batch, heads=heads, head_dim=head_dim, dtype=dtype, kv_heads=kv_heads)


def select(problems, names: str | None):
    """Keep only the problems named in a comma list (case-insensitive)."""
    if not names:
        return tuple(problems)
    want = {n.strip().lower() for n in names.split(",") if n.strip()}
    kept = tuple(p for p in problems if p.name.lower() in want)
    missing = want - {p.name.lower() for p in kept}
    if missing:
        raise ValueError(f"unknown problem(s) {sorted(missing)}; have {[p.name for p in problems]}")
    return kept


def validate(p: Problem) -> None:
    """Raise jax_na's own ValueError/TypeError if the problem is not a valid NA call."""
    import jax
    import jax.numpy as jnp

    from jax_na.params import make_params

    q = jax.ShapeDtypeStruct(p.q_shape(), jnp.dtype(p.dtype))
    kv = jax.ShapeDtypeStruct(p.kv_shape(), jnp.dtype(p.dtype))
    make_params(q, kv, kv, p.kernel, p.stride, p.dilation, p.causal)
