#!/usr/bin/env bash
# The SLURM acceptance test: start a one-node SLURM cluster (tests/slurm/slurm-ci.sh), then, as a
# user would, submit jobs/submit_array.sh (a 3-shard array + the merge step with a dependency)
# and jobs/sd_mpi.sbatch (2 ranks through srun/PMIx), and check both results equal an mpirun
# run of the same job. Exit 77 (skipped) when not root or SLURM is not installed.
#   check_slurm.sh path/to/sd_mpi
set -uo pipefail
sd=$(realpath "$1")
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/.." && pwd)
command -v slurmctld >/dev/null && command -v munge >/dev/null || { echo "SLURM not installed (tools/setup.sh --slurm)"; exit 77; }
[ "$(id -u)" -eq 0 ] || { echo "the one-node SLURM test needs root"; exit 77; }
tmp=$(mktemp -d)
export SLURM_CI_DIR=$tmp/slurm
cleanup() { "$here/slurm/slurm-ci.sh" stop >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT
eval "$("$here/slurm/slurm-ci.sh" start)" || { echo "FAIL: SLURM did not start"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
same() { /usr/bin/python3 "$here/python/check_archive.py" same "$1" "$2" >/dev/null 2>&1; }
wait_jobs() {  # until none of the given jobs is queued or running (at most $2 s)
  for _ in $(seq $(($2 * 5))); do squeue -h -j "$1" 2>/dev/null | grep -q . || return 0; sleep 0.2; done
  return 1
}

cd "$tmp"
printf '%s\n' "a photo of a cat" "an owl at night" "a red bicycle" "a bowl of ramen" "mountains at dawn" >prompts.txt
args="-n 2 --steps 3 --seed 11"
mpirun -np 2 "$sd" generate --model tiny --prompts prompts.txt $args --archive ref.h5 --progress none -q
check "reference run with mpirun" "[ -s ref.h5 ]"

# 1. The job array and its merge, submitted exactly as jobs/README.md tells users to.
out=$(SD_MPI="$sd" SD_MPI_ARGS="$args" GPUS_PER_TASK=0 "$root/jobs/submit_array.sh" 3 tiny "$tmp/prompts.txt" "$tmp/array")
echo "$out"
array=$(echo "$out" | sed -n 's/^array job \([0-9]*\).*/\1/p')
merge=$(echo "$out" | sed -n 's/.*merge job \([0-9]*\).*/\1/p')
wait_jobs "$array,$merge" 300
check "array tasks and merge job finished" "! squeue -h -j $array,$merge 2>/dev/null | grep -q ."
check "three shard archives" "[ \$(ls array/shard_*_of_00003.h5 2>/dev/null | wc -l) -eq 3 ]"
check "array + merge equals the mpirun run" "same ref.h5 array/merged.h5"
check "merge step log names the merged rows" "grep -q 'merged 3 archive' sd_merge-$merge.log"
[ $fail = 0 ] || tail -n 20 sd_array-*.log sd_merge-*.log 2>/dev/null

# 2. One multi-rank job through srun (PMIx direct launch), as jobs/sd_mpi.sbatch runs it.
job=$(MODEL=tiny PROMPTS="$tmp/prompts.txt" OUT="$tmp/single" SD_MPI="$sd" SD_MPI_ARGS="$args" \
      sbatch --parsable --ntasks-per-node=2 "$root/jobs/sd_mpi.sbatch")
wait_jobs "$job" 300
check "sd_mpi.sbatch with 2 srun ranks equals the mpirun run" "same ref.h5 single/images.h5"
check "its log shows both ranks" "grep -q 'rank 1/2' sd_mpi-$job.log"
[ $fail = 0 ] || tail -n 30 sd_mpi-*.log 2>/dev/null

# 3. Requeue on SLURM's early signal: USR1 to the batch shell (what --signal=B:USR1@120 does),
#    forwarded to the ranks, which stop at an image boundary and exit 75; the script requeues the
#    job, which resumes and completes. The result equals an uninterrupted run.
long="-n 8 --steps 25 --seed 11"
mpirun -np 2 "$sd" generate --model tiny --prompts prompts.txt $long --archive long_ref.h5 --progress none -q
job=$(MODEL=tiny PROMPTS="$tmp/prompts.txt" OUT="$tmp/requeue" SD_MPI="$sd" SD_MPI_ARGS="$long" \
      sbatch --parsable --ntasks-per-node=2 "$root/jobs/sd_mpi.sbatch")
for _ in $(seq 300); do
  n=$(HDF5_USE_FILE_LOCKING=FALSE /usr/bin/python3 -c "import h5py; print(int((h5py.File('requeue/images.h5','r')['done'][:]==1).sum()))" 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 4 ] && break
  sleep 0.1
done
scancel --batch --signal=USR1 "$job"
for _ in $(seq 600); do grep -q "restart 1" "sd_mpi-$job.log" 2>/dev/null && break; sleep 0.2; done
wait_jobs "$job" 300
check "USR1 → exit 75 → requeue → resume: the log shows the stop and the restart" \
  "grep -q 'requeueing job' sd_mpi-$job.log && grep -q 'restart 1' sd_mpi-$job.log"
check "the requeued job's archive equals an uninterrupted run" "same long_ref.h5 requeue/images.h5"
[ $fail = 0 ] || tail -n 30 "sd_mpi-$job.log" 2>/dev/null
exit $fail
