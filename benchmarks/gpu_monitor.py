"""SM clock and power during a run, sampled by `nvidia-smi` in the background.

An H100 held busy for more than about a second reaches its power limit and lowers its SM clock
(1980 MHz down to ~1730 on average, BENCHMARKS.md): a row's time depends on what ran before it.
The monitor timestamps each sample as it arrives; `window(t0, t1)` summarises the samples of one
row (runner.Row.t_start/t_end) and `summary()` the whole run. Without `nvidia-smi` (CPU machines)
it records nothing and every summary is None.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
import time

QUERY = ["--query-gpu=clocks.sm,power.draw,power.limit,temperature.gpu", "--format=csv,noheader,nounits"]


class GpuMonitor:
    def __init__(self, interval_ms: int = 250, cmd: list[str] | None = None):
        exe = shutil.which("nvidia-smi")
        self.cmd = cmd or ([exe, *QUERY, f"--loop-ms={interval_ms}"] if exe else None)
        self.samples: list[tuple[float, float, float, float, float]] = []  # t, MHz, W, limit W, °C
        self._proc = None
        self._thread = None

    def __enter__(self):
        if self.cmd:
            try:
                self._proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                              text=True, bufsize=1)
            except OSError:
                self._proc = None
            else:
                self._thread = threading.Thread(target=self._read, daemon=True)
                self._thread.start()
        return self

    def _read(self):
        for line in self._proc.stdout:
            try:
                clock, power, limit, temp = (float(x) for x in line.split(","))
            except ValueError:  # "[N/A]" fields, partial lines
                continue
            self.samples.append((time.perf_counter(), clock, power, limit, temp))

    def __exit__(self, *exc):
        if self._proc:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._thread.join(timeout=5)
        return False

    def window(self, t0: float, t1: float) -> dict | None:
        """SM clock and power over the samples taken in [t0, t1] (perf_counter seconds)."""
        s = [x for x in self.samples if t0 <= x[0] <= t1]
        if not s:
            return None
        clocks, power = [x[1] for x in s], [x[2] for x in s]
        limit = max(x[3] for x in s)
        return {"sm_clock_mhz_median": statistics.median(clocks), "sm_clock_mhz_min": min(clocks),
                "power_w_median": statistics.median(power), "power_w_max": max(power),
                "power_limit_w": limit, "at_power_limit": sum(p >= 0.95 * limit for p in power) / len(s),
                "temp_c_max": max(x[4] for x in s), "samples": len(s)}

    def summary(self) -> dict | None:
        return self.window(float("-inf"), float("inf"))
