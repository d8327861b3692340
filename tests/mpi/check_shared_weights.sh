#!/usr/bin/env bash
# One copy of the weights per node (issue 17 item 4), with the real binary on one node:
#  - mpirun -np 2..4 on CPU ranks, with a model folder (safetensors files) and the built-in tiny
#    model: the node's ranks use one shared, already converted copy (rank 0 says so) and make the
#    same images and metadata as one process (tests/python/check_archive.py same);
#  - --no-shared-weights: every rank converts its own copy (no such line), same images;
#  - --map-weights (float32 files used in place): same images;
#  - the resource plan counts a rank's share of the node's copy (a whole copy with --no-shared-weights);
#  - PSS (shared pages counted once) of the ranks: the shared copy is counted once, so the summed
#    PSS of 4 ranks with sharing stays below that without it.
#   check_shared_weights.sh path/to/sd_mpi
set -uo pipefail
sd=$(realpath "$1")
here=$(cd "$(dirname "$0")/.." && pwd)
check_py=/usr/bin/python3
same() { "$check_py" "$here/python/check_archive.py" same "$1" "$2" >/dev/null 2>&1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
shared_line='weights: one copy per node in shared memory'
printf '%s\n' "a photo of a cat" "an owl at night" "a red bicycle" >"$tmp/p.txt"
"$sd" make-model --preset tiny --seed 3 "$tmp/model" >/dev/null 2>&1

for model in "$tmp/model" tiny; do
  job=(--model "$model" --prompts "$tmp/p.txt" -n 2 --steps 3 --seed 7 --progress none)
  name=$(basename "$model")
  "$sd" generate "${job[@]}" --archive "$tmp/$name-ref.h5" 2>"$tmp/err"; rc=$?
  check "$name: single-process reference, one copy of its own (rc=$rc)" "[ $rc -eq 0 ] && ! grep -q '$shared_line' $tmp/err"
  for np in 2 3 4; do
    mpirun -np $np "$sd" generate "${job[@]}" --archive "$tmp/$name-np$np.h5" 2>"$tmp/err" >/dev/null; rc=$?
    check "$name: mpirun -np $np: one shared copy on the node (rc=$rc)" "[ $rc -eq 0 ] && grep -q '$shared_line' $tmp/err"
    check "$name: mpirun -np $np with shared weights: same images and metadata" "same $tmp/$name-ref.h5 $tmp/$name-np$np.h5"
  done
  mpirun -np 3 "$sd" generate "${job[@]}" --no-shared-weights --archive "$tmp/$name-own.h5" 2>"$tmp/err" >/dev/null; rc=$?
  check "$name: --no-shared-weights: a copy per rank, same images (rc=$rc)" \
    "[ $rc -eq 0 ] && ! grep -q '$shared_line' $tmp/err && same $tmp/$name-ref.h5 $tmp/$name-own.h5"
done

# The resource plan counts each rank's share of the node's one copy (and a whole copy per rank
# with --no-shared-weights): a request too large for the node names how the weights were counted.
big=(--model "$tmp/model" --prompt cat --width 16384 --height 16384 --progress none --out-dir "$tmp/big")
mpirun -np 2 "$sd" generate "${big[@]}" >"$tmp/out" 2>&1; rc=$?
check "plan with shared weights: exit 2, weights counted as shared by 2 ranks (rc=$rc)" \
  "[ $rc -eq 2 ] && grep -q 'weights shared by 2 ranks' $tmp/out && [ ! -e $tmp/big ]"
mpirun -np 2 "$sd" generate "${big[@]}" --no-shared-weights >"$tmp/out" 2>&1; rc=$?
check "plan with --no-shared-weights: exit 2, a whole copy per rank (rc=$rc)" \
  "[ $rc -eq 2 ] && grep -q 'needs about' $tmp/out && ! grep -q 'weights shared by' $tmp/out"

# --map-weights: the float32 files of the folder model computed from in place, same images.
job=(--model "$tmp/model" --prompts "$tmp/p.txt" -n 2 --steps 3 --seed 7 --progress none)
"$sd" generate "${job[@]}" --map-weights --archive "$tmp/mapped.h5" 2>/dev/null; rc=$?
check "--map-weights, one process: same images (rc=$rc)" "[ $rc -eq 0 ] && same $tmp/model-ref.h5 $tmp/mapped.h5"
mpirun -np 2 "$sd" generate "${job[@]}" --map-weights --no-shared-weights --archive "$tmp/mapped2.h5" >/dev/null 2>&1; rc=$?
check "--map-weights, 2 ranks with a copy each: same images (rc=$rc)" "[ $rc -eq 0 ] && same $tmp/model-ref.h5 $tmp/mapped2.h5"

# Summed PSS of 4 ranks, sampled while they generate (a longer job of the folder model).
pss_run() {  # extra options...; prints the largest summed PSS in kB seen
  local max=0
  mpirun -np 4 "$sd" generate --model "$tmp/model" --prompts "$tmp/p.txt" -n 8 --steps 20 --seed 7 --progress none \
    --archive "$tmp/pss.h5" --overwrite "$@" >/dev/null 2>&1 &
  local launcher=$!
  while kill -0 $launcher 2>/dev/null; do
    local sum=0
    for pid in $(pgrep -P $launcher -x sd_mpi); do
      local p; p=$(awk '/^Pss:/ {print $2}' /proc/$pid/smaps_rollup 2>/dev/null)
      sum=$((sum + ${p:-0}))
    done
    [ $sum -gt $max ] && max=$sum
    sleep 0.2
  done
  wait $launcher
  echo $max
}
with=$(pss_run); without=$(pss_run --no-shared-weights)
check "4 ranks: summed PSS with shared weights ${with} kB < without ${without} kB" "[ $with -gt 0 ] && [ $with -lt $without ]"
exit $fail
