#!/bin/bash
# Run the fused family's standalone GPU check on a device machine (repo root as cwd).
# Uses a prebuilt binary (FUSED_BIN, default .fused_bin/fused_check) when it runs there,
# else builds one for sm_90a with nvcc. Extra arguments go to fused_check.
# SANITIZE=1 also runs compute-sanitizer (memcheck, racecheck) on a few small cases first.
set -o pipefail
OUT=${OUT:-/tmp/fused_out}
mkdir -p "$OUT"
BIN=${FUSED_BIN:-.fused_bin/fused_check}
if ! [ -x "$BIN" ] || ! "$BIN" --no-bench --no-check > /dev/null 2>&1; then
  echo "building fused_check on the device"
  BIN=/tmp/fused_build/fused_check
  mkdir -p /tmp/fused_build
  ls cuda/fused/*.cu cuda/hopper/*.cu cuda/repair/*.cu cuda/fused/test/fused_check.cc | xargs -P 12 -I{} sh -c \
    'nvcc -O3 -std=c++17 --expt-relaxed-constexpr -gencode=arch=compute_90a,code=sm_90a -I cuda/common -x cu -c {} -o /tmp/fused_build/$(echo {} | tr / _).o' || exit 1
  nvcc -gencode=arch=compute_90a,code=sm_90a /tmp/fused_build/*.o -o "$BIN" || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader | tee "$OUT/log"
if [ -n "$SANITIZE" ]; then
  for c in "2d 7x9" "3d 6x10x13" "1d causal L130"; do
    timeout 120 compute-sanitizer --tool memcheck --print-limit 5 "$BIN" --no-bench --only "$c" 2>&1 | tail -4 | tee -a "$OUT/log"
  done
  timeout 120 compute-sanitizer --tool racecheck --print-limit 5 "$BIN" --no-bench --only "2d 12x12" 2>&1 | tail -4 | tee -a "$OUT/log"
fi
"$BIN" "$@" 2>&1 | tee -a "$OUT/log"
