#!/usr/bin/env bash
# compute-sanitizer (memcheck, racecheck, initcheck, synccheck) over every CUDA kernel family
# jax_na can run here (jax_na.available_families(), cuda-*), forward and backward, at edge shapes
# (scripts/sanitize_cases.py holds the cases). One sanitizer process per tool, all families in
# it; tools run in parallel (SANITIZE_JOBS). memcheck, racecheck and synccheck instrument only
# kernels whose name contains "jax_na" (--kernel-regex kns=jax_na), so XLA's own kernels are not
# checked; initcheck instruments every kernel (so that memory XLA's kernels write counts as
# initialized) and its reports in XLA kernels are listed but not counted. A report is counted
# against a family by the jax_na::<family>:: namespace or cuda/<family>/ path it names.
# XLA runs with exact per-buffer allocations (platform allocator, no preallocation), no command
# buffers and no autotuning. The tool x family table comes last; exit status 1 on any error in a
# jax_na kernel, a failed or unfinished run.
#
#   bash scripts/sanitize.sh                       # all tools, all families
#   bash scripts/sanitize.sh --dry-run             # print what would run (no GPU needed)
#   bash scripts/sanitize.sh --quick               # fewer cases (scripts/gpu_check.sh's budget)
#   bash scripts/sanitize.sh --tools memcheck,racecheck --families cuda-fused
#
# Environment: PYTHON (default python3), OUT (logs; default ./out/sanitize), SANITIZE_JOBS
# (tools at once, default 4), SANITIZE_TIMEOUT (seconds per tool, default 210),
# SANITIZER (compute-sanitizer binary), SANITIZE_FILTER=0 (instrument every kernel, XLA's too:
# slower; shows that the jax_na kernels are among those checked).
set -u -o pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
OUT=${OUT:-$ROOT/out/sanitize}
JOBS=${SANITIZE_JOBS:-4}
TIMEOUT=${SANITIZE_TIMEOUT:-210}
SAN=${SANITIZER:-compute-sanitizer}
TOOLS="memcheck,racecheck,initcheck,synccheck"
FAMILIES=""
DRY=0
QUICK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|-n) DRY=1 ;;
    --quick) QUICK=--quick ;;
    --tools) TOOLS=$2; shift ;;
    --tools=*) TOOLS=${1#*=} ;;
    --families) FAMILIES=$(echo "$2" | tr ',' ' '); shift ;;
    --families=*) FAMILIES=$(echo "${1#*=}" | tr ',' ' ') ;;
    --jobs) JOBS=$2; shift ;;
    --timeout) TIMEOUT=$2; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
CASES="$ROOT/scripts/sanitize_cases.py"

# Import the installed jax_na (not the source tree, which may lack the compiled extension),
# unless the source tree has one.
RUNDIR=/tmp
ls "$ROOT"/jax_na/_jax_na_native*.so >/dev/null 2>&1 && RUNDIR=$ROOT
if [ -z "$FAMILIES" ]; then
  BUILT=""
  [ "$DRY" = 1 ] && BUILT="--built-only"
  FAMILIES=$(cd "$RUNDIR" && $PY "$CASES" --families $BUILT 2>/dev/null | tail -1)
fi
if [ -z "$FAMILIES" ]; then
  echo "sanitize: no CUDA family available (jax_na.available_families() has no cuda-*; no GPU or a CPU-only build)"
  [ "$DRY" = 1 ] && exit 0
  exit 1
fi
FAMARGS=""
for f in $FAMILIES; do FAMARGS="$FAMARGS --family $f"; done

# Per-tool options (an option this compute-sanitizer does not list in --help is left out).
# --report-api-errors no: XLA's own CUDA API calls that fail by design are not ours (a failing
# call of ours fails its case in the driver instead).
HELP=""
[ "$DRY" = 1 ] || HELP=$("$SAN" --help 2>&1 || true)
has_opt() { [ "$DRY" = 1 ] || echo "$HELP" | grep -q -- "$1"; }
common_opts() {
  local o="--tool $1"
  has_opt --target-processes && o="$o --target-processes all"
  # initcheck checks every kernel: a kernel it does not instrument would leave the memory it
  # writes "uninitialized" for ours (XLA computes some of our inputs, e.g. the backward's delta).
  # SANITIZE_FILTER=0: no filter at all (reports in XLA's kernels are then listed, not counted).
  if [ "$1" != initcheck ] && [ "${SANITIZE_FILTER:-1}" != 0 ]; then
    if has_opt --kernel-regex; then o="$o --kernel-regex kns=jax_na"
    elif has_opt --kernel-name; then o="$o --kernel-name kns=jax_na"; fi
  fi
  has_opt --report-api-errors && o="$o --report-api-errors no"
  has_opt --print-limit && o="$o --print-limit 100"
  echo "$o"
}
tool_opts() {
  case "$1" in
    memcheck) has_opt --leak-check && echo "--leak-check no" ;;
    *) echo "" ;;
  esac
}
ENVS="XLA_PYTHON_CLIENT_PREALLOCATE=false XLA_PYTHON_CLIENT_ALLOCATOR=platform JAX_NA_TUNING=0 TF_CPP_MIN_LOG_LEVEL=2 CUDA_MODULE_LOADING=LAZY"
# No command buffers (plain kernel launches), no autotuning (no extra kernels).
XLAF="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer= --xla_gpu_autotune_level=0"

echo "sanitize: families: $FAMILIES"
echo "sanitize: tools: $TOOLS (jobs $JOBS, timeout ${TIMEOUT}s each), logs in $OUT"
if [ "$DRY" = 1 ]; then
  for tool in $(echo "$TOOLS" | tr ',' ' '); do
    echo
    echo "[$tool] (cd $RUNDIR && env $ENVS XLA_FLAGS=\"$XLAF\" timeout $TIMEOUT $SAN $(common_opts "$tool") $(tool_opts "$tool") $PY $CASES --run --tool $tool $QUICK$FAMARGS) > $OUT/$tool.log 2>&1"
    echo "[$tool] cases (each on every family; [F only] on family F):"
    (cd "$RUNDIR" && $PY "$CASES" --list --tool "$tool" $QUICK)
  done
  exit 0
fi
if ! command -v "$SAN" >/dev/null; then
  echo "sanitize: $SAN not found (CUDA toolkit bin/ on PATH?)"
  exit 1
fi
"$SAN" --version 2>&1 | tail -1
mkdir -p "$OUT"

START=$SECONDS
run_tool() {
  local tool=$1 log="$OUT/$1.log"
  rm -f "$OUT/$tool.timeout"
  (cd "$RUNDIR" && env $ENVS XLA_FLAGS="$XLAF" timeout -k 15 "$TIMEOUT" "$SAN" $(common_opts "$tool") $(tool_opts "$tool") \
    $PY "$CASES" --run --tool "$tool" $QUICK $FAMARGS) >"$log" 2>&1
  local rc=$?
  { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && touch "$OUT/$tool.timeout"
  echo "$rc" >"$OUT/$tool.rc"
  echo "sanitize: $tool finished (rc=$rc, $((SECONDS - START))s): $(grep -E '^DRIVER DONE' "$log" | tail -1)"
}
running=0
for tool in $(echo "$TOOLS" | tr ',' ' '); do
  run_tool "$tool" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n 2>/dev/null || wait
    running=$((running - 1))
  fi
done
wait
# A tool whose process died by a signal before its driver finished (compute-sanitizer itself has
# crashed so, seconds in, with four tools side by side; the cases it had run were clean) runs
# once more, alone; its first log is kept as <tool>.crashed.log.
for tool in $(echo "$TOOLS" | tr ',' ' '); do
  rc=$(cat "$OUT/$tool.rc" 2>/dev/null)
  if [ "${rc:-0}" -gt 128 ] && [ "$rc" != 137 ] && ! grep -q '^DRIVER DONE' "$OUT/$tool.log"; then
    mv "$OUT/$tool.log" "$OUT/$tool.crashed.log"
    echo "sanitize: $tool crashed (rc=$rc) before its driver finished; running it again alone"
    run_tool "$tool"
  fi
done
echo "sanitize: all tools done in $((SECONDS - START))s"
echo
SANITIZE_FILTER=${SANITIZE_FILTER:-1} $PY "$CASES" --summarize "$OUT" --tools "$TOOLS" $FAMARGS | tee "$OUT/summary.txt"
exit "${PIPESTATUS[0]}"
