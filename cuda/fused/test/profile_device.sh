#!/bin/bash
# ncu profile of the fused kernels on a device machine: one forward + backward of each named
# benchmark problem (substring of its name), stall reasons and pipe utilisation per kernel.
# usage: profile_device.sh PROBLEM... (output under $OUT/ncu_*.txt)
OUT=${OUT:-/tmp/fused_out}
BIN=${FUSED_BIN:-.fused_bin/fused_check}
[ -x "$BIN" ] || BIN=/tmp/fused_build/fused_check
M='regex:smsp__warp_issue_stalled_.*_per_warp_active\.pct'
M="$M,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active"
M="$M,smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum"
M="$M,sm__warps_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum"
M="$M,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum"
M="$M,lts__t_sector_hit_rate.pct,dram__bytes.sum,launch__registers_per_thread,launch__occupancy_limit_registers"
for prob in "$@"; do
  tag=$(echo "$prob" | tr -c 'A-Za-z0-9' '_')
  ncu --metrics "$M" -k regex:fused_ "$BIN" --no-check --profile --bench "$prob" > "$OUT/ncu_$tag.txt" 2>&1
  echo "== ncu $prob"; grep -E "fused_|duration|hmma|issue_active|inst_executed|warps_active|stalled_(barrier|long_score|short_score|math|mio|wait|not_sel|lg_thr|no_inst|dispatch|branch)" "$OUT/ncu_$tag.txt" | sed -E 's/ +/ /g' | head -80
done
