#!/usr/bin/env bash
# The project's one script for a GPU machine (no network needed): build + install jax_na with
# its CUDA families, report registers/spills and tensor-core instructions of the kernels, run
# the GPU tests, compute-sanitizer (memcheck, racecheck, initcheck, synccheck) on every family
# via scripts/sanitize.sh, time benchmark problem V1 against plain JAX and cuDNN, and print a
# short summary table last.
#
#   bash scripts/gpu_check.sh            # logs go to $OUT (or ./out/gpu_check when OUT is unset)
#
# Environment: PYTHON (default python3), GPU_CHECK_BUDGET (seconds for the whole run, default
# 580: the test stage gets what the other stages leave, ~250 s on an H100), SKIP_BUILD=1 (use
# the installed package), GPU_CHECK_BENCH=0 / GPU_CHECK_SANITIZE=0 (skip those stages; GPU_CHECK_SANITIZE=full
# runs every sanitizer case instead of scripts/sanitize.sh --quick). Wheels in .whl/
# (for machines without network) are installed first.
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/out/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET:-580}
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
stage() { echo; echo "=== $* ($(date +%T), ${SECONDS}s) ==="; }

stage "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -4
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
$PY -c "import sys, jax; print('python', sys.version.split()[0], '| jax', jax.__version__, '|', jax.devices())" 2>&1 | tail -1
nvcc --version 2>&1 | tail -1

# --- wheels carried for machines without network ----------------------------------------------
if ls .whl/*.whl >/dev/null 2>&1; then
  stage "carried wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# --- build + install --------------------------------------------------------------------------
BUILD=skipped
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  stage "build (pip install --no-build-isolation --no-deps -v .)"
  export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
  if JAX_NA_CUDA=1 timeout 300 $PY -m pip install --no-build-isolation --no-deps -v . >"$OUT/build.log" 2>&1; then
    BUILD=ok
  else
    BUILD="FAILED (see build.log)"
    grep -E "error|Error" "$OUT/build.log" | head -30
  fi
  echo "build: $BUILD (${SECONDS}s)"
fi
cd /tmp  # import the installed package, not the source tree
FAMS=$($PY -c "import jax_na; print(' '.join(jax_na.available_families()))" 2>&1 | tail -1)
SO=$($PY -c "import jax_na._jax_na_native as m; print(m.__file__)" 2>/dev/null | tail -1)
echo "available families: $FAMS"
cd "$ROOT"

# --- registers / spills (ptxas -v from the verbose build) and tensor-core instructions --------
stage "kernels: registers, spills, HMMA/HGMMA"
demangle() { if command -v cu++filt >/dev/null; then cu++filt; elif command -v c++filt >/dev/null; then c++filt; else cat; fi; }
# From ptxas -v in the build log; when the build reused its objects (scikit-build-core keeps
# build/, so ptxas did not run), from cuobjdump -res-usage of the installed module instead
# (local memory per thread stands in for spills there).
if [ -f "$OUT/build.log" ] || [ -n "$SO" ]; then
  $PY - "$OUT/build.log" "$SO" >"$OUT/kernels.txt" <<'EOF'
import os, re, shutil, subprocess, sys
tool = shutil.which("cu++filt") or shutil.which("c++filt")
def demangle(n):
    d = subprocess.run([tool], input=n, capture_output=True, text=True).stdout.strip() if tool else n
    d = d.replace("(anonymous namespace)::", "").replace("<unnamed>::", "")
    if d.endswith(")"):  # drop the parameter list (the last balanced group), keep "(int)128"
        depth = 0
        for i in range(len(d) - 1, -1, -1):
            depth += d[i] == ")"
            depth -= d[i] == "("
            if depth == 0:
                return d[:i]
    return d
fn = stack = None
rows = set()
log = open(sys.argv[1], errors="replace").read().splitlines() if os.path.exists(sys.argv[1]) else []
for line in log:
    m = re.search(r"Compiling entry function '(\S+)' for '(sm_\w+)'", line)
    if m:
        fn, arch = m.groups()
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m:
        stack = m.groups()
        continue
    m = re.search(r"Used (\d+) registers", line)
    if m and fn and stack:
        rows.add((arch, int(m.group(1)), stack[0], f"{stack[1]}/{stack[2]}", fn))
        fn = None
if not rows and sys.argv[2] and shutil.which("cuobjdump"):
    print("# from cuobjdump -res-usage (no ptxas report in the build log): spill=local:N is local memory")
    res = subprocess.run(["cuobjdump", "-res-usage", sys.argv[2]], capture_output=True, text=True).stdout
    arch = None
    for line in res.splitlines():
        m = re.match(r"arch = (sm_\w+)", line)
        if m:
            arch = m.group(1)
        m = re.match(r"\s*Function (\S+):", line)
        if m:
            fn = m.group(1)
        m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", line)
        if m and fn and arch:
            reg, st, loc = m.groups()
            rows.add((arch, int(reg), st, "0/0" if loc == "0" else f"local:{loc}", fn))
            fn = None
for arch, regs, st, sp, fn in sorted(rows, key=lambda r: (r[4], r[0])):
    print(f"{arch:7s} regs={regs:<4d} stack={st:<4s} spill={sp:<8s} {demangle(fn)}")
EOF
fi
if [ -n "$SO" ] && command -v cuobjdump >/dev/null; then
  echo "--- SASS: matrix instructions per kernel (sm_90a section) ---" >>"$OUT/kernels.txt"
  cuobjdump -sass -arch sm_90a "$SO" 2>/dev/null | awk '
    /Function :/ {fn=$3} /HMMA/ {h[fn]++} /HGMMA/ {g[fn]++} /FFMA/ {f[fn]++} /Function :/ {seen[fn]=1}
    END {for (k in seen) printf "HMMA=%-5d HGMMA=%-5d FFMA=%-6d %s\n", h[k], g[k], f[k], k}' |
    while read -r a b c fn; do echo "$a $b $c $(echo "$fn" | demangle | sed 's/(anonymous namespace):://g; s/<unnamed>:://g; s/([^()]*)$//')"; done |
    sort -k4 >>"$OUT/kernels.txt"
fi
cat "$OUT/kernels.txt" 2>/dev/null | grep -E "naive|gemm|fused|hopper" | head -140
NSPILL=$(grep -E "^sm_" "$OUT/kernels.txt" 2>/dev/null | grep -vc "spill=0/0" || true)
NKERN=$(grep -cE "^sm_" "$OUT/kernels.txt" 2>/dev/null || true)

# --- GPU tests (this project's, then every other gpu-marked test) -----------------------------
stage "pytest -m gpu"
# What the budget leaves after reserving time for the sanitizer, the benchmark and the summary.
# Sanitizer: four tools in parallel, each with a timeout of its reserve less 15 s.
case "${GPU_CHECK_SANITIZE:-1}" in
  0) SAN_RESERVE=0 ;;
  full) SAN_RESERVE=270 ;;
  *) SAN_RESERVE=135 ;;
esac
RESERVE=$(( SAN_RESERVE + (${GPU_CHECK_BENCH:-1} != 0 ? 75 : 0) + 10 ))
LEFT=$((BUDGET - SECONDS - RESERVE))
[ "$LEFT" -lt 60 ] && LEFT=60
# pytest, the sanitizer and the benchmark import jax_na from the source tree (rootdir on
# sys.path), which has no compiled extension after a plain `pip install .`, or an older one
# left by an earlier run on this machine (which the tests would then check instead of this
# build): lend the tree the installed extension for the run, and put back what was there.
LENT=""
KEPT=""
restore_extension() {
  [ -n "$LENT" ] && rm -f "$LENT"
  for f in $KEPT; do mv -f "$f.gpu-check-kept" "$f"; done
  LENT=""
  KEPT=""
}
trap restore_extension EXIT
if [ -n "$SO" ]; then
  for f in "$ROOT"/jax_na/_jax_na_native*.so; do
    [ -e "$f" ] && ! cmp -s "$f" "$SO" && mv -f "$f" "$f.gpu-check-kept" && KEPT="$KEPT $f"
  done
  if [ ! -e "$ROOT/jax_na/$(basename "$SO")" ]; then
    cp "$SO" "$ROOT/jax_na/" && LENT="$ROOT/jax_na/$(basename "$SO")"
  fi
  [ -n "$KEPT" ] && echo "lent this build's extension to the source tree (set aside:$KEPT)"
fi
(cd "$ROOT" && $PY -c "import jax_na; print('tests import', jax_na.__file__, jax_na.available_families())" 2>&1 | tail -1)
# --capture=sys: a native crash or XLA's own fatal message lands in the log instead of a
# pytest temp file (fd capture loses it when the process exits from C). JAX_NA_TEST_FAST_COMPILE=0:
# conftest's CPU compile-speed XLA flags are not for this machine.
(cd "$ROOT" && PYTHONUNBUFFERED=1 JAX_NA_TEST_FAST_COMPILE=${JAX_NA_TEST_FAST_COMPILE:-0} timeout "$LEFT" \
  $PY -m pytest -m gpu -q -rfEs --tb=short --capture=sys -p no:cacheprovider \
  --rootdir "$ROOT" tests/test_gpu.py tests/ >"$OUT/pytest.log" 2>&1)
PYRC=$?
[ "$PYRC" -gt 1 ] && { echo "pytest exited with $PYRC; log tail:"; tail -15 "$OUT/pytest.log"; }
grep -E "^(FAILED|ERROR)" "$OUT/pytest.log" | head -40
TESTS=$(grep -E "(passed|failed|error|skipped)" "$OUT/pytest.log" | grep -E " in [0-9.]+s" | tail -1)
[ -z "$TESTS" ] && TESTS="no result line (rc=$PYRC; timeout=124) -- see pytest.log"

# --- compute-sanitizer: memcheck, racecheck, initcheck, synccheck on every family -----------
SAN=skipped
if [ "$SAN_RESERVE" -gt 0 ] && command -v compute-sanitizer >/dev/null; then
  stage "compute-sanitizer (scripts/sanitize.sh)"
  SANARGS="--quick"
  [ "${GPU_CHECK_SANITIZE:-1}" = full ] && SANARGS=""
  (cd "$ROOT" && OUT="$OUT/sanitize" PYTHON=$PY SANITIZE_TIMEOUT=$((SAN_RESERVE - 15)) \
    bash scripts/sanitize.sh $SANARGS) >"$OUT/sanitizer.log" 2>&1
  sed -n '/^compute-sanitizer: errors/,$p' "$OUT/sanitizer.log"
  grep -E "^  \[(memcheck|racecheck|initcheck|synccheck)\]" "$OUT/sanitizer.log" | head -20
  SAN=$(grep -E "^RESULT:" "$OUT/sanitizer.log" | tail -1)
  [ -z "$SAN" ] && SAN="no result (see sanitizer.log)"
fi

# --- benchmark V1: the project's runner, every family beside plain JAX and cuDNN ------------
if [ "${GPU_CHECK_BENCH:-1}" != 0 ]; then
  stage "benchmark V1 (bf16, B=128, H=2, 56x56, D=32, k=7)"
  (cd "$ROOT" && timeout 120 $PY benchmarks/run.py --suite anchors --problems V1 --no-floors \
    --peers cudnn-full,reference,jax_na --time-limit 90 --json "$OUT/bench.json") >"$OUT/bench.txt" 2>"$OUT/bench.err"
  grep -E "^V1 " "$OUT/bench.txt"
fi
restore_extension

# --- summary (last) ---------------------------------------------------------------------------
echo
say "================ gpu_check summary ($GPU, ${SECONDS}s) ================"
say "build:            $BUILD"
say "families:         $FAMS"
say "kernels w/ spill: ${NSPILL:-?} of ${NKERN:-?} (kernels.txt)"
say "HMMA in gemm:     $(grep -E 'gemm::' "$OUT/kernels.txt" 2>/dev/null | grep -E '^HMMA' | awk '{split($1,a,"="); s+=a[2]} END {print s+0}') instructions over $(grep -E 'gemm::' "$OUT/kernels.txt" 2>/dev/null | grep -cE '^HMMA=[1-9]') kernels"
say "HGMMA in hopper:  $(grep -E 'hopper::' "$OUT/kernels.txt" 2>/dev/null | grep -E '^HMMA' | awk '{split($2,a,"="); s+=a[2]} END {print s+0}') instructions over $(grep -E 'hopper::' "$OUT/kernels.txt" 2>/dev/null | grep -cE 'HGMMA=[1-9]') kernels"
say "sanitizer:        $SAN"
say "pytest -m gpu:    $TESTS"
if [ -f "$OUT/bench.txt" ]; then
  say "V1 (median ms per call; effective TFLOP/s; speedup over cuDNN dense):"
  grep -E "^V1 " "$OUT/bench.txt" | awk '$4 ~ /^[0-9]/ {printf "  %-8s %-20s %9s ms %8s TF/s %s\n", $2, $3, $4, $6, $7}' | tee -a "$SUMMARY"
fi
