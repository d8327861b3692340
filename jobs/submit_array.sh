#!/bin/bash
# Submits a job array of K shards and, after all of them succeed, the merge step.
#   jobs/submit_array.sh K MODEL PROMPTS OUT [extra sbatch args for the array...]
# Environment: SD_MPI (the binary, default sd_mpi on PATH), SD_MPI_ARGS (extra generate options),
# GPUS_PER_TASK (default 1; 0 on CPU-only partitions).
# The merge step is cancelled automatically if a shard fails (--kill-on-invalid-dep=yes); fix the
# cause and resubmit: finished shards resume and skip what they already hold.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 4 ] || { sed -n '2,6p' "$0"; exit 2; }
K=$1 MODEL=$2 PROMPTS=$3 OUT=$4; shift 4
export MODEL PROMPTS OUT SD_MPI=${SD_MPI:-sd_mpi} SD_MPI_ARGS=${SD_MPI_ARGS:-}
gpu=()
[ "${GPUS_PER_TASK:-1}" != 0 ] && gpu=(--gpus-per-task="${GPUS_PER_TASK:-1}")
array=$(sbatch --parsable --array=0-$((K - 1)) --export=ALL "${gpu[@]}" "$@" "$here/sd_array.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable --dependency=afterok:"$array" --kill-on-invalid-dep=yes --export=ALL "$here/sd_merge.sbatch")
echo "array job $array ($K shards), merge job $merge -> $OUT/merged.h5"
