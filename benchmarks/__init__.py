"""jax_na benchmark suite: `python benchmarks/run.py --suite quick` (see BENCHMARKS.md)."""
