"""The tiling and masking logic of the fused kernels (which the Hopper kernels reuse), emulated on
the host (cuda/fused/test/tiling_check.cc): every CTA, warp and lane of the query- and
key-stationary kernels over 300 geometries, checking that each (query, key) neighbour pair is
computed exactly once and no other pair is; the same for the resident-box kernels' per-warp tiles
and gathered rows; FastDiv and the 16-bit NaN/Inf test against their definitions. Needs nvcc
(no GPU); skipped without it."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: the tiling check is a CUDA host program")
def test_tiling_and_masks_cover_each_pair_once(tmp_path):
    exe = tmp_path / "tiling_check"
    subprocess.run([NVCC, "-O2", "-std=c++17", "-I", str(ROOT / "cuda/common"),
                    str(ROOT / "cuda/fused/tile_select.cu"),
                    str(ROOT / "cuda/fused/resident_box_plan.cu"), "-x", "cu",
                    str(ROOT / "cuda/fused/test/tiling_check.cc"), "-o", str(exe)],
                   check=True, capture_output=True, text=True, timeout=600)
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-2000:]
    assert "tiling_check: 0 of 300 geometries failed" in out, out[-2000:]
    # Checks against a definition, each on its own line "<name> checked: N, wrong: W": the
    # inverse neighbourhood of every key range of small groups, the grid decode's divisions (/
    # and %), the box cursors' divisions and the stored chunks' NaN/Inf test (lane by lane).
    for name, least in (("inverse ranges", 100001), ("fast_div", 1000000), ("small_div", 16000000),
                        ("nonfinite_lanes16", 1000000)):
        assert name + " checked: " in out, out[-2000:]
        counts = out.split(name + " checked: ")[1].split("\n")[0]
        assert int(counts.split(",")[0]) >= least and counts.endswith("wrong: 0"), out[-2000:]
    # The random geometries must exercise the resident-box plans too.
    checked = int(out.split("resident-box plans checked: ")[1].split()[0])
    assert checked >= 20, out[-2000:]
    # ...and tilings that tiles_never_cut accepts (the Hopper forward then runs without masks).
    never_cut = int(out.split("tilings with no tile cut checked: ")[1].split()[0])
    assert never_cut >= 3, out[-2000:]
