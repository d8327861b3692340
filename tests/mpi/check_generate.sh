#!/usr/bin/env bash
# The cluster acceptance tests with the real binary and the built-in tiny model (CPU backend):
#  - mpirun -np 1..4 (4 oversubscribed), static and dynamic, batch 1 and 3: identical /images and
#    metadata (tests/python/check_archive.py same)
#  - a job array of 3 shards plus merge equals the single run; an empty shard is fine
#  - kill -9 of the whole job mid-run: the archive opens, holds only finished images, and
#    --resume completes it with every index once and the same images as the uninterrupted run
#  - SIGUSR1 (SLURM's early warning) and SIGTERM: stop at an image boundary, exit 75, resume
#  - --resume with an archive of another job is refused with the reason
#   check_generate.sh path/to/sd_mpi
set -uo pipefail
sd=$(realpath "$1")
here=$(cd "$(dirname "$0")/.." && pwd)
check_py=/usr/bin/python3
same() { "$check_py" "$here/python/check_archive.py" same "$1" "$2" >/dev/null 2>&1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1
export HDF5_USE_FILE_LOCKING=FALSE  # the test reads archives while a job writes them
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
printf '%s\n' "a photo of a cat" "an owl at night" "a red bicycle" "a bowl of ramen" "mountains at dawn" >"$tmp/p.txt"
job=(--model tiny --prompts "$tmp/p.txt" -n 2 --steps 3 --seed 7 --progress none -q)

"$sd" generate "${job[@]}" --archive "$tmp/ref.h5"; rc=$?
check "single-process reference (rc=$rc)" "[ $rc -eq 0 ]"
for np in 1 2 3 4; do
  for dist in static dynamic; do
    mpirun -np $np "$sd" generate "${job[@]}" --distribution $dist --archive "$tmp/np$np$dist.h5" >/dev/null 2>&1; rc=$?
    check "mpirun -np $np $dist: same images and metadata (rc=$rc)" "[ $rc -eq 0 ] && same $tmp/ref.h5 $tmp/np$np$dist.h5"
  done
done
mpirun -np 2 "$sd" generate "${job[@]}" --batch-size 3 --archive "$tmp/b3.h5" >/dev/null 2>&1
check "batch size 3: same images" "same $tmp/ref.h5 $tmp/b3.h5"

# Job array: 3 shards (one with 2 ranks), then merge.
for i in 0 1 2; do
  np=$((i == 1 ? 2 : 1))
  mpirun -np $np "$sd" generate "${job[@]}" --shard $i/3 --archive "$tmp/shard$i.h5" >/dev/null 2>&1
done
"$sd" merge "$tmp/merged.h5" "$tmp/shard0.h5" "$tmp/shard1.h5" "$tmp/shard2.h5" >/dev/null 2>&1; rc=$?
check "3 shards + merge = the single run (rc=$rc)" "[ $rc -eq 0 ] && same $tmp/ref.h5 $tmp/merged.h5"
"$sd" merge "$tmp/m2.h5" "$tmp/shard0.h5" "$tmp/shard2.h5" 2>"$tmp/err"; rc=$?
check "merge with a shard missing is refused (rc=$rc)" "[ $rc -ne 0 ] && grep -q missing $tmp/err && [ ! -e $tmp/m2.h5 ]"
SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=3 "$sd" generate "${job[@]}" --archive "$tmp/env1.h5" >/dev/null 2>&1
check "shard from SLURM_ARRAY_TASK_ID/COUNT equals --shard 1/3" "same $tmp/shard1.h5 $tmp/env1.h5"
"$sd" generate "${job[@]}" --shard 12/20 --archive "$tmp/empty.h5" 2>"$tmp/err" >/dev/null; rc=$?
check "an empty shard: exit 0, an empty archive, a clear message (rc=$rc)" \
  "[ $rc -eq 0 ] && grep -q 'holds no items' $tmp/err && $check_py -c 'import h5py,sys; sys.exit(h5py.File(\"$tmp/empty.h5\")[\"images\"].shape[0])'"

# Resume refuses another job's archive.
"$sd" generate --model tiny --prompts "$tmp/p.txt" -n 2 --steps 3 --seed 8 -q --archive "$tmp/ref.h5" --resume 2>"$tmp/err" >/dev/null; rc=$?
check "--resume with another job's archive is refused (rc=$rc)" "[ $rc -ne 0 ] && grep -q 'another job' $tmp/err"
"$sd" generate "${job[@]}" --archive "$tmp/ref.h5" 2>"$tmp/err" >/dev/null; rc=$?
check "an existing archive without --resume is refused (rc=$rc)" "[ $rc -eq 2 ] && grep -q -- '--resume' $tmp/err"

# kill -9 of the whole job mid-run, then --resume. A longer job so the kill lands mid-way.
long=(--model tiny --prompts "$tmp/p.txt" -n 8 --steps 25 --seed 7 --progress none -q)
"$sd" generate "${long[@]}" --archive "$tmp/long_ref.h5"
setsid mpirun -np 2 "$sd" generate "${long[@]}" --archive "$tmp/k.h5" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 200); do
  n=$($check_py -c "import h5py; print(int((h5py.File('$tmp/k.h5','r')['done'][:]==1).sum()))" 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 5 ] && break
  sleep 0.1
done
# Every process of the job: mpirun and its ranks (Open MPI puts ranks in their own process
# groups, but they stay in the session setsid made).
pkill -9 -s $pid 2>/dev/null; wait $pid 2>/dev/null
for _ in $(seq 50); do pgrep -s $pid >/dev/null || break; sleep 0.1; done
$check_py - "$tmp/k.h5" "$tmp/long_ref.h5" <<'PY' >"$tmp/kres" 2>&1
import sys, h5py, numpy as np
a, r = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
done = a["done"][:] == 1
ok = 0 < done.sum() < len(done) and all(np.array_equal(a["images"][i], r["images"][i]) for i in np.nonzero(done)[0])
print(int(done.sum()), "done"); sys.exit(0 if ok else 1)
PY
krc=$?
check "kill -9 mid-run: the archive opens and holds only finished, correct images ($(cat $tmp/kres))" "[ $krc -eq 0 ]"
mpirun -np 2 "$sd" generate "${long[@]}" --archive "$tmp/k.h5" --resume >/dev/null 2>&1; rc=$?
check "--resume after kill -9 completes the job identically (rc=$rc)" "[ $rc -eq 0 ] && same $tmp/long_ref.h5 $tmp/k.h5"

# A rank that dies (kill -9 of rank 1 alone): the job ends, every image written stays, resume completes.
setsid mpirun -np 3 "$sd" generate "${long[@]}" --archive "$tmp/r.h5" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 200); do
  n=$($check_py -c "import h5py; print(int((h5py.File('$tmp/r.h5','r')['done'][:]==1).sum()))" 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.1
done
victim=$(for p in $(pgrep -s $pid); do
  tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && echo "$p"; done | head -1)
[ -n "$victim" ] && kill -9 "$victim"
ended=0
for _ in $(seq 300); do kill -0 $pid 2>/dev/null || { ended=1; break; }; sleep 0.1; done
wait $pid 2>/dev/null; rc=$?
check "a rank killed with -9 ends the whole job (rc=$rc)" "[ -n '$victim' ] && [ $ended = 1 ] && [ $rc -ne 0 ]"
$check_py - "$tmp/r.h5" "$tmp/long_ref.h5" <<'PY' >"$tmp/rres" 2>&1
import sys, h5py, numpy as np
a, r = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
done = a["done"][:] == 1
ok = done.sum() > 0 and all(np.array_equal(a["images"][i], r["images"][i]) for i in np.nonzero(done)[0])
print(int(done.sum()), "done"); sys.exit(0 if ok else 1)
PY
krc=$?
check "after a rank died the archive holds every finished image intact ($(cat $tmp/rres))" "[ $krc -eq 0 ]"
mpirun -np 2 "$sd" generate "${long[@]}" --archive "$tmp/r.h5" --resume >/dev/null 2>&1; rc=$?
check "--resume after a dead rank completes the job identically (rc=$rc)" "[ $rc -eq 0 ] && same $tmp/long_ref.h5 $tmp/r.h5"

# SIGUSR1 (forwarded by mpirun to every rank) and SIGTERM: exit 75 at an image boundary, then resume.
for sig in USR1 TERM; do
  mpirun -np 2 "$sd" generate "${long[@]}" --archive "$tmp/s$sig.h5" >"$tmp/slog" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    n=$($check_py -c "import h5py; print(int((h5py.File('$tmp/s$sig.h5','r')['done'][:]==1).sum()))" 2>/dev/null || echo 0)
    [ "${n:-0}" -ge 3 ] && break
    sleep 0.1
  done
  kill -$sig $pid; wait $pid; rc=$?
  if [ $sig = USR1 ]; then check "SIGUSR1: every rank stops, exit 75 (rc=$rc)" "[ $rc -eq 75 ]"; fi
  mpirun -np 3 "$sd" generate "${long[@]}" --archive "$tmp/s$sig.h5" --resume >/dev/null 2>&1; rc=$?
  check "SIG$sig then --resume on 3 ranks: every index once, same images (rc=$rc)" "[ $rc -eq 0 ] && same $tmp/long_ref.h5 $tmp/s$sig.h5"
done
exit $fail
