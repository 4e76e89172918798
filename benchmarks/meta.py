"""What a result was measured on: card, versions, date, commit."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """`git rev-parse --short HEAD` (+ '-dirty'), or $JAX_NA_COMMIT, or 'unknown'."""
    env = os.environ.get("JAX_NA_COMMIT")
    if env:
        return env
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_info() -> dict:
    import jax

    dev = jax.devices()[0]
    kind = dev.device_kind
    card = cpu_model() if dev.platform == "cpu" else kind
    info = {"platform": dev.platform, "device_kind": kind, "card": card,
            "device_count": jax.device_count(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count()}
    try:
        stats = dev.memory_stats() or {}
        if "bytes_limit" in stats:
            info["bytes_limit"] = int(stats["bytes_limit"])
    except Exception:  # noqa: BLE001 - not every backend has memory stats
        pass
    return info


def collect(argv=None) -> dict:
    import jax
    import jaxlib

    import jax_na

    return {
        **device_info(),
        "jax_version": jax.__version__,
        "jaxlib_version": getattr(jaxlib, "__version__", "?"),
        "jax_na_version": getattr(jax_na, "__version__", "?"),
        "available_families": list(jax_na.available_families()),
        "python": sys.version.split()[0],
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": git_commit(),
        "command": " ".join(argv if argv is not None else sys.argv),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


def available_memory_bytes() -> int:
    """Memory a run may use on the default device (GPU allocator limit, or host MemAvailable)."""
    info = device_info()
    if "bytes_limit" in info and info["platform"] != "cpu":
        return info["bytes_limit"]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30
