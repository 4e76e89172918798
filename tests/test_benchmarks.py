"""The benchmark suite runs end to end on CPU: dry run, a slice of the quick suite with JSON,
Markdown and PNG output, and the profiler's cache. Kept short (tiny budgets, two problems)."""

import importlib.util
import json
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import gpu_monitor, problems, profiler, run, runner, timing, trace


def test_flops_and_bytes_follow_benchmarks_md():
    v1 = problems.select(problems.ANCHORS, "V1")[0]
    assert v1.flops("fwd") == 4 * 128 * 2 * 56 * 56 * 49 * 32
    assert v1.flops("fwd+bwd") == 3.5 * v1.flops("fwd")
    # q, k, v, out once: 4 × 128·3136·2·32·2 B ≈ 205 MB (+ the float32 lse)
    assert abs(v1.min_bytes("fwd") - 4 * 128 * 3136 * 2 * 32 * 2) <= 128 * 3136 * 2 * 4
    assert {p.name for p in problems.ANCHORS} == {"A1", "A1s", "A1c", "A2", "A2s", "A3", "A3s", "V1", "V2", "A1b", "K31"}


def test_custom_problem_from_cli_lists():
    p = problems.custom([56, 56], [7], [1, 1], None, [0, 1], heads=2, head_dim=32, batch=4, dtype="bf16")
    assert p.kernel == (7, 7) and p.dilation == (1, 1) and p.causal == (False, True) and p.dtype == "bfloat16"
    with pytest.raises(ValueError):
        problems.custom([56, 56], [7, 7, 7])
    with pytest.raises(SystemExit, match="kernel_size"):
        run.main(["--dims", "16", "--kernel", "9", "--dilation", "2", "--dry-run"])


def test_timing_reports_median_and_spread():
    xs = [(jnp.ones((64, 64)) * i,) for i in range(3)]
    compiled, compile_s = timing.compile_fn(lambda x: x @ x, xs[0])
    t = timing.time_compiled(compiled, xs, budget_s=0.05, target_block_s=1e-3)
    assert compile_s >= 0 and t.n_blocks >= 3 and t.calls_per_block >= 1
    assert 0 < t.min_s <= t.p10_s <= t.median_s <= t.p90_s


def test_chain_runs_calls_back_to_back_in_one_dispatch():
    f = lambda q, k, v: jnp.tanh(q @ k.T @ v)  # noqa: E731 - out has q's shape
    sets = [tuple(jnp.full((8, 8), 0.05 * (1 + i + j)) + jnp.eye(8) * j for j in range(3)) for i in range(2)]
    assert timing.chains(f, *sets[0]) and not timing.chains(lambda q, k, v: q[0], *sets[0])
    flat = [x for s in sets for x in s]
    want = f(f(f(sets[0][0], *sets[0][1:]), *sets[1][1:]), *sets[0][1:])  # k, v of sets 0, 1, 0
    np.testing.assert_allclose(timing.chain(f, 3, 2)(*flat), want, rtol=1e-6)
    compiled, _ = timing.compile_fn(timing.chain(f, 3, 2), flat)
    t = timing.time_compiled(compiled, [flat], budget_s=0.05, target_block_s=1e-3)
    one = timing.per_call(t, 3)
    assert one.calls_per_dispatch == 3 and one.median_s == pytest.approx(t.median_s / 3)
    assert 0 < one.min_s <= one.median_s <= one.p90_s


def test_chain_of_steps_feeds_out_and_keeps_every_gradient():
    """A fwd+bwd step (runner.with_grad) chained: each step's out is the next step's q, and every
    step's gradients come back (none dropped by XLA)."""
    f = lambda q, k, v: jnp.tanh(q @ k.T @ v)  # noqa: E731
    g = runner.with_grad(f)
    sets = [tuple(jnp.full((8, 8), 0.05 * (1 + i + j)) + jnp.eye(8) * j for j in range(4)) for i in range(2)]
    assert timing.chains(g, *sets[0])
    flat = [x for s in sets for x in s]
    q, kept = jax.jit(timing.chain(g, 3, 2, 4))(*flat)
    q_i = sets[0][0]
    for i, s in enumerate((0, 1, 0)):
        out, *grads = g(q_i, *sets[s][1:])
        for got, want in zip(kept[i], grads):
            np.testing.assert_allclose(got, want, rtol=1e-5)
        q_i = out
    np.testing.assert_allclose(q, q_i, rtol=1e-5)
    t, _ = timing.time_chained(g, sets, 3, budget_s=0.05, target_block_s=1e-3)
    assert t.calls_per_dispatch == 3 and 0 < t.min_s <= t.median_s


def test_fast_rows_are_timed_chained(tmp_path, capsys):
    js = tmp_path / "c.json"
    argv = ["--suite", "quick", "--problems", "Q2,Q2d", "--peers", "reference,xla-full",
            "--modes", "fwd,fwd+bwd", "--chain-below-ms", "1e4", "--max-row-s", "0.05", "--no-floors",
            "--json", str(js)]
    assert run.main(argv) == 0
    assert capsys.readouterr().out.count("×32 chained (host-timed") == 8  # fwd+bwd steps too
    rows = [r for r in json.loads(js.read_text())["rows"] if r["status"] == "ok"]
    assert len(rows) == 8 and any("timed once" in r["reason"] for r in rows)  # Q2d's dense rows are Q2's
    for r in rows:
        assert r["calls_per_dispatch"] == 32 and r["host_timed_ms"] > 0 and r["time_ms"] > 0


def test_gpu_monitor_summarises_what_it_sampled():
    lines = "\n".join(f"print('{c}, {w}, 700.00, 61', flush=True); time.sleep(0.02)"
                      for c, w in ((1980, 420.5), (1710, 699.0), (1455, 700.0)))
    with gpu_monitor.GpuMonitor(cmd=[sys.executable, "-c", "import time\n" + lines + "\nprint('[N/A], 1, 2, 3')"]) as m:
        for _ in range(200):
            if len(m.samples) == 3:
                break
            time.sleep(0.01)
    s = m.summary()
    assert s["samples"] == 3 and s["sm_clock_mhz_min"] == 1455 and s["sm_clock_mhz_median"] == 1710
    assert s["power_w_max"] == 700.0 and s["at_power_limit"] == pytest.approx(2 / 3)
    assert m.window(m.samples[0][0], m.samples[0][0])["samples"] == 1 and m.window(0.0, 0.0) is None
    if shutil.which("nvidia-smi") is None:  # a CPU machine: nothing to sample, no summaries
        with gpu_monitor.GpuMonitor() as idle:
            pass
        assert idle.cmd is None and idle.summary() is None


def test_tuning_key_is_a_stable_signature():
    key = profiler.tuning_key("NVIDIA H100 80GB HBM3", "fwd", (128, 56, 56, 2, 32), 2, "bfloat16",
                              (7, 7), (1, 1), (1, 1), (False, False))
    assert key == "NVIDIA H100 80GB HBM3|fwd|bfloat16|q=128x56x56x2x32|hkv=2|k=7x7|s=1x1|d=1x1|c=00"


def test_auto_choice_names_a_family_per_direction(monkeypatch):
    """backend=None may lower the forward and the backward to different families (head_dim 32 on
    sm_90): the auto row then names both and is timed (no single family's row stands for it)."""
    from benchmarks import peers
    from jax_na import backends as na_backends
    v1 = problems.select(problems.ANCHORS, "V1")[0]
    monkeypatch.setattr(peers.jax_na, "available_families", lambda: ["cuda-fused", "cuda-hopper"])
    monkeypatch.setattr(peers, "platform", lambda: "cuda")
    pick = {"fwd": "cuda-fused", "bwd": "cuda-hopper"}
    monkeypatch.setattr(na_backends, "family_for", lambda plat, b, dt, d, direction="fwd": pick[direction])
    assert peers.auto_choice(v1) == "cuda-fused (forward) + cuda-hopper (backward)"
    assert peers._auto_why_not(v1) is None
    pick["bwd"] = "cuda-fused"
    assert peers.auto_choice(v1) == "cuda-fused"
    assert "jax_na:cuda-fused row" in peers._auto_why_not(v1)


def test_dry_run_lists_backends_without_running(capsys):
    assert run.main(["--suite", "quick", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for p in problems.QUICK:
        assert p.name in out
    assert "reference" in out and "profiler candidates" in out and "backend=None here" in out


def test_quick_suite_writes_json_markdown_png(tmp_path, capsys):
    js, png, md = tmp_path / "q.json", tmp_path / "q.png", tmp_path / "q.md"
    argv = ["--suite", "quick", "--problems", "Q1c,Q2", "--peers", "reference,jax_na", "--max-row-s", "0.05",
            "--floor-budget-s", "0.05", "--time-limit", "120", "--json", str(js), "--png", str(png), "--md", str(md)]
    assert run.main(argv) == 0
    table = capsys.readouterr().out
    assert "problem" in table and "TFLOP/s" in table and "Q2" in table
    doc = json.loads(js.read_text())
    meta = doc["meta"]
    assert meta["card"] and meta["jax_version"] == jax.__version__ and meta["date"] and meta["git_commit"]
    assert doc["floors"]["matmul"]["float32"]["flops_per_s"] > 0
    ok = [r for r in doc["rows"] if r["status"] == "ok"]
    assert "reference" in {r["peer"] for r in ok}
    assert {(r["problem"], r["mode"]) for r in ok} == {(p, m) for p in ("Q1c", "Q2") for m in ("fwd", "fwd+bwd")}
    for r in ok:
        assert r["time_ms"] > 0 and r["p10_ms"] <= r["p90_ms"] and r["tflops"] > 0 and "speedup" in r
        if r["peer"].startswith("jax_na") and r["mode"] == "fwd":
            assert r["rel_err"] < 1e-3  # f32 backends agree with the reference
    assert all(r["reason"] for r in doc["rows"] if r["status"] != "ok")
    if importlib.util.find_spec("matplotlib"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert md.read_text().count("\n|") >= 4


def test_optimize_writes_the_tuning_cache(tmp_path, capsys):
    cache = tmp_path / "tuning.json"
    peers = "jax_na" if jax_na_families() else "reference"  # the reference alone compiles slowly
    argv = ["--suite", "quick", "--problems", "Q2", "--optimize", "--peers", peers, "--no-floors",
            "--max-row-s", "0.05", "--time-limit", "120", "--cache", str(cache)]
    assert run.main(argv) == 0
    assert "best Q2 fwd" in capsys.readouterr().out
    entries = json.loads(cache.read_text())["entries"]
    q2 = problems.select(problems.QUICK, "Q2")[0]
    e = entries[profiler.problem_key(q2, "fwd")]
    assert e["backend"] in ("reference",) + jax_na_families() and e["time_ms"] > 0
    assert profiler.problem_key(q2, "bwd") in entries


def jax_na_families():
    import jax_na

    return tuple(jax_na.available_families())


@pytest.mark.parametrize("flags, reason", [(["--mem-frac", "1e-9"], "memory limit"),
                                           (["--time-limit", "0.001"], "time limit")])
def test_limits_skip_rows_with_reasons(tmp_path, capsys, flags, reason):
    js = tmp_path / "s.json"
    assert run.main(["--suite", "quick", "--problems", "Q1", "--no-floors", "--json", str(js), *flags]) == 0
    rows = json.loads(js.read_text())["rows"]
    assert rows and all(r["status"] == "skipped" for r in rows)
    assert all(reason in r["reason"] for r in rows if r["applicable"])
    assert reason in capsys.readouterr().out


def test_trace_summarises_kernels_and_gaps(capsys):
    # two steps of: kernel a (10 us), 5 us idle, kernel b (20 us) overlapping a memset (2 us)
    ev = []
    for t0 in (0, 100_000):
        ev += [(t0, 10_000, "a"), (t0 + 15_000, 20_000, "b"), (t0 + 16_000, 2_000, "memset")]
    s = trace.summarise(ev, 2)
    assert [(n, round(us, 3), c) for n, us, c in s["kernels"]] == [("b", 20.0, 1), ("a", 10.0, 1), ("memset", 2.0, 1)]
    assert s["gaps_us"] == (5 + 65 + 5) / 2  # within steps, and from step 1's end to step 2's start
    assert s["span_us"] == 135 / 2
    assert trace.summarise([], 3) == {"span_us": 0.0, "kernels": [], "gaps_us": 0.0}
    # on this machine (CPU) the trace has no device plane: the script says so instead of failing
    assert trace.main(["--suite", "quick", "--problems", problems.QUICK[0].name, "--peer", "reference",
                       "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert ("no device events" in out) == (jax.devices()[0].platform == "cpu")
