#!/usr/bin/env bash
# Faults the product must survive (issue 15), one case per ctest test. Each case injects its fault
# into a job of the built-in tiny model (64x64, few steps, CPU backend), then checks that
#  - the process ends with a clear one-line error and an exit code, never a crash signal;
#  - the archive still opens and every row marked finished holds exactly the image of an
#    uninterrupted run (nothing finished is lost, nothing wrong is kept);
#  - `--resume` after the fault is removed completes the job, and the final archive's /images and
#    metadata equal the uninterrupted run's (tests/python/check_archive.py same).
#
#   check_faults.sh path/to/sd_mpi CASE     CASE: disk_full | rank_killed | nan | weights | damaged_archive
# Exit 77 (ctest SKIP_RETURN_CODE) when the case cannot be set up here (disk_full needs mount).
set -uo pipefail
sd=$(realpath "$1")
case_name=$2
here=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3  # Debian's, with h5py and numpy
tmp=$(mktemp -d)
mnt=""
cleanup() { [ -n "$mnt" ] && umount "$mnt" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=1
export HDF5_USE_FILE_LOCKING=FALSE  # the test reads archives while a job writes them
fail=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi; }
same() { "$py" "$here/python/check_archive.py" same "$1" "$2" >"$tmp/same.log" 2>&1 || { cat "$tmp/same.log"; return 1; }; }
# Not killed by a signal: 128+n from the shell, or mpirun's 128+n / 134 / 135 / 139.
not_a_crash() { [ "$1" -ne 0 ] && [ "$1" -lt 128 ]; }
# Rows marked finished (done == 1) in $1, and whether each equals the reference $2's image.
finished_intact() {
  "$py" - "$1" "$2" <<'PY'
import sys, h5py, numpy as np
a, r = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
done = np.nonzero(a["done"][:] == 1)[0]
bad = [int(i) for i in done if not np.array_equal(a["images"][i], r["images"][i])]
print(len(done), "finished", "damaged:" if bad else "", *bad)
sys.exit(1 if bad else 0)
PY
}
n_done() { "$py" -c "import h5py; print(int((h5py.File('$1','r')['done'][:]==1).sum()))" 2>/dev/null || echo 0; }
wait_done() {  # wait until archive $1 holds at least $2 finished images (or 30 s)
  for _ in $(seq 300); do [ "$(n_done "$1")" -ge "$2" ] && return 0; sleep 0.1; done
  return 1
}

printf '%s\n' "a photo of a cat" "an owl at night" "a red bicycle" "a bowl of ramen" "mountains at dawn" >"$tmp/p.txt"
job=(--prompts "$tmp/p.txt" -n 3 --steps 12 --seed 7 --width 64 --height 64 --progress none -q)
ref="$tmp/ref.h5"
"$sd" generate --model tiny "${job[@]}" --archive "$ref" --out-dir "$tmp/ref_png"; rc=$?
check "uninterrupted reference run (rc=$rc)" "[ $rc -eq 0 ]"

case "$case_name" in
disk_full)
  # A small tmpfs filled up mid-job: the archive and the PNGs live on it.
  mnt="$tmp/small"; mkdir -p "$mnt"
  if ! mount -t tmpfs -o size=4m tmpfs "$mnt" 2>/dev/null; then
    mnt=""; echo "SKIP: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)"; exit 77
  fi
  a="$mnt/a.h5"
  "$sd" generate --model tiny "${job[@]}" --archive "$a" --out-dir "$mnt/png" 2>"$tmp/err" &
  pid=$!
  wait_done "$a" 4
  # Fill what is left: the next image's write meets ENOSPC.
  dd if=/dev/zero of="$mnt/filler" bs=64k >/dev/null 2>&1
  wait $pid; rc=$?
  check "disk full: a clear error and a failure exit, not a crash (rc=$rc)" "not_a_crash $rc"
  check "disk full: the error names the file and the reason ($(head -c 300 "$tmp/err" | tr '\n' ' '))" \
    "grep -q -E '$mnt/(a\.h5|png/[0-9]+\.png)' $tmp/err && grep -q -i 'space' $tmp/err"
  check "disk full: the error is one line" "[ \$(grep -c . $tmp/err) -eq 1 ]"
  rm -f "$mnt/filler"
  res=$(finished_intact "$a" "$ref"); krc=$?
  check "disk full: every finished image is intact ($res)" "[ $krc -eq 0 ] && [ \$(n_done $a) -ge 4 ]"
  for f in "$mnt"/png/*.png; do
    cmp -s "$f" "$tmp/ref_png/$(basename "$f")" || { echo "PNG $f differs from the reference"; fail=1; }
  done
  "$sd" generate --model tiny "${job[@]}" --archive "$a" --out-dir "$mnt/png" --resume; rc=$?
  check "disk full: --resume after space is freed completes the job identically (rc=$rc)" "[ $rc -eq 0 ] && same $ref $a"
  check "disk full: every PNG equals the reference's" "diff -rq $tmp/ref_png $mnt/png >/dev/null && [ -z \"\$(ls $mnt/png | grep -v '\.png$')\" ]"
  # The archive alone (no PNGs): the disk fills under HDF5's write of an image chunk.
  rm -rf "$mnt"/*
  a="$mnt/b.h5"
  "$sd" generate --model tiny "${job[@]}" --archive "$a" 2>"$tmp/err" &
  pid=$!
  wait_done "$a" 4
  dd if=/dev/zero of="$mnt/filler" bs=64k >/dev/null 2>&1
  wait $pid; rc=$?
  check "disk full under HDF5: a one-line error naming the archive and errno 28 (rc=$rc: $(head -c 300 "$tmp/err"))" \
    "not_a_crash $rc && grep -q '$a' $tmp/err && grep -q 'No space left on device (errno 28)' $tmp/err && [ \$(grep -c . $tmp/err) -eq 1 ]"
  rm -f "$mnt/filler"
  res=$(finished_intact "$a" "$ref"); krc=$?
  check "disk full under HDF5: every finished image is intact ($res)" "[ $krc -eq 0 ] && [ \$(n_done $a) -ge 4 ]"
  "$sd" generate --model tiny "${job[@]}" --archive "$a" --resume; rc=$?
  check "disk full under HDF5: --resume after space is freed completes the job identically (rc=$rc)" "[ $rc -eq 0 ] && same $ref $a"
  ;;

rank_killed)
  # kill -9 of one worker rank under --distribution dynamic, -np 3. Rank 0 names a silent rank
  # 0.5 s after its own stop signal; Open MPI's default grace before it SIGKILLs the survivors is
  # 1 s, which a loaded CI machine (the sanitizer tests beside this one) overran once (session 8):
  # 5 s here, as SLURM's KillWait (30 s by default) gives on a cluster.
  a="$tmp/r.h5"
  setsid mpirun --mca odls_base_sigkill_timeout 5 -np 3 "$sd" generate --model tiny "${job[@]}" --distribution dynamic --archive "$a" >"$tmp/log" 2>&1 &
  pid=$!
  wait_done "$a" 3
  victim=$(for p in $(pgrep -s $pid); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && echo "$p"; done | head -1)
  [ -n "$victim" ] && kill -9 "$victim"
  ended=0
  for _ in $(seq 300); do kill -0 $pid 2>/dev/null || { ended=1; break; }; sleep 0.1; done
  [ $ended = 1 ] || pkill -9 -s $pid
  wait $pid; rc=$?
  check "rank 1 killed: the job ends with a failure (rc=$rc, victim pid ${victim:-none})" "[ -n '$victim' ] && [ $ended = 1 ] && [ $rc -ne 0 ]"
  check "rank 1 killed: rank 0 names rank 1 ($(grep -m1 'rank 1 has' "$tmp/log"))" \
    "grep -q '\[rank 0/3\].*rank 1 has not answered' $tmp/log"
  res=$(finished_intact "$a" "$ref"); krc=$?
  check "rank 1 killed: every finished image is intact ($res)" "[ $krc -eq 0 ] && [ \$(n_done $a) -ge 3 ]"
  mpirun -np 3 "$sd" generate --model tiny "${job[@]}" --distribution dynamic --archive "$a" --resume >/dev/null 2>&1; rc=$?
  check "rank 1 killed: --resume completes the job identically (rc=$rc)" "[ $rc -eq 0 ] && same $ref $a"
  ;;

nan)
  # NaN injected after the denoising loop for items 3 and 5 (SDMPI_FAULT_NAN_ITEMS, txt2img.cpp).
  a="$tmp/n.h5"
  SDMPI_FAULT_NAN_ITEMS=3,5 mpirun -np 2 "$sd" generate --model tiny "${job[@]}" --archive "$a" 2>"$tmp/err" >/dev/null; rc=$?
  check "NaN in items 3 and 5: the job goes on and exits 3, items failed (rc=$rc)" "[ $rc -eq 3 ]"
  check "NaN: the log names each failed item and the reason" \
    "grep -q 'item 3 .*non-finite' $tmp/err && grep -q 'item 5 .*non-finite' $tmp/err"
  "$py" - "$a" <<'PY' >"$tmp/res" 2>&1
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
done, err = f["done"][:], f["error"].asstr()[:]
failed = sorted(int(i) for i in np.nonzero(done == 2)[0])
ok = failed == [3, 5] and all("non-finite" in err[i] for i in failed) and (done == 1).sum() == len(done) - 2
print("failed rows", failed, [err[i] for i in failed]); sys.exit(0 if ok else 1)
PY
  krc=$?
  check "NaN: rows 3 and 5 are failed (done=2) with the reason in /error, the rest finished ($(cat "$tmp/res"))" "[ $krc -eq 0 ]"
  res=$(finished_intact "$a" "$ref"); krc=$?
  check "NaN: every finished image equals the reference ($res)" "[ $krc -eq 0 ]"
  "$sd" generate --model tiny "${job[@]}" --archive "$a" --resume 2>/dev/null; rc=$?
  check "NaN: --resume without the fault remakes the failed items, same archive as the reference (rc=$rc)" "[ $rc -eq 0 ] && same $ref $a"
  ;;

weights)
  # A model folder's weight file truncated, then changed, after the job started. The weights are
  # read once, when the model loads, into the backend's memory (docs in jobs/README.md); a job
  # that already loaded them makes its images unharmed. A run that opens the damaged file says so
  # in one line; --resume with changed weights is refused (another job); restored, it completes.
  m="$tmp/model"
  "$sd" make-model --preset tiny --seed 0 "$m" >/dev/null 2>&1 || "$sd" make-model --preset tiny "$m" >/dev/null
  wfile=$(ls "$m"/unet/*.safetensors | head -1)
  cp "$wfile" "$tmp/unet.orig"
  "$sd" generate --model "$m" "${job[@]}" --archive "$tmp/wref.h5"; rc=$?
  check "weights: reference run with the model folder (rc=$rc)" "[ $rc -eq 0 ]"
  a="$tmp/w.h5"
  "$sd" generate --model "$m" "${job[@]}" --archive "$a" 2>"$tmp/err" &
  pid=$!
  wait_done "$a" 3
  truncate -s $(( $(stat -c %s "$wfile") / 2 )) "$wfile"
  sleep 0.5
  kill -USR1 $pid; wait $pid; rc=$?
  check "weights truncated mid-job: no crash signal, stops cleanly on request (rc=$rc)" "[ $rc -eq 75 ] || [ $rc -eq 0 ]"
  res=$(finished_intact "$a" "$tmp/wref.h5"); krc=$?
  check "weights truncated mid-job: every finished image is intact ($res)" "[ $krc -eq 0 ]"
  "$sd" generate --model "$m" "${job[@]}" --archive "$a" --resume 2>"$tmp/err" >/dev/null; rc=$?
  check "weights truncated: --resume is refused in one line naming the changed weights (rc=$rc: $(head -c 200 "$tmp/err"))" \
    "not_a_crash $rc && grep -q 'weights of $m changed' $tmp/err && [ \$(grep -c . $tmp/err) -eq 1 ]"
  "$sd" generate --model "$m" "${job[@]}" --archive "$tmp/w_new.h5" 2>"$tmp/err" >/dev/null; rc=$?
  check "weights truncated: a new job refuses the file in one line naming it, no SIGBUS (rc=$rc: $(head -c 200 "$tmp/err"))" \
    "not_a_crash $rc && grep -q '$wfile' $tmp/err && [ \$(grep -c . $tmp/err) -eq 1 ]"
  cp "$tmp/unet.orig" "$wfile"
  "$py" - "$wfile" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:  # change one weight byte near the end, same size
    f.seek(-8, 2); b = f.read(1); f.seek(-8, 2); f.write(bytes([b[0] ^ 0x40]))
PY
  "$sd" generate --model "$m" "${job[@]}" --archive "$a" --resume 2>"$tmp/err" >/dev/null; rc=$?
  check "weights changed: --resume is refused as another job (rc=$rc: $(head -c 200 "$tmp/err"))" \
    "not_a_crash $rc && grep -q 'weights of $m changed' $tmp/err"
  res=$(finished_intact "$a" "$tmp/wref.h5"); krc=$?
  check "weights: the refused resumes left the finished images intact ($res)" "[ $krc -eq 0 ]"
  cp "$tmp/unet.orig" "$wfile"
  "$sd" generate --model "$m" "${job[@]}" --archive "$a" --resume >/dev/null 2>&1; rc=$?
  check "weights restored: --resume completes the job identically (rc=$rc)" "[ $rc -eq 0 ] && same $tmp/wref.h5 $a"
  ;;

damaged_archive)
  # Bytes of one /images chunk overwritten by hand in a half-finished archive.
  a="$tmp/d.h5"
  "$sd" generate --model tiny "${job[@]}" --archive "$a" &
  pid=$!
  wait_done "$a" 5
  kill -USR1 $pid; wait $pid
  cp "$a" "$tmp/d_clean.h5"
  "$py" - "$a" <<'PY' >"$tmp/row"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    row = int(np.nonzero(f["done"][:] == 1)[0][1])  # the second finished row
    ds = f["images"]
    info = ds.id.get_chunk_info_by_coord((row, 0, 0, 0))
    off, size = info.byte_offset, info.size
with open(sys.argv[1], "r+b") as f:
    f.seek(off + size // 4); f.write(b"\xde\xad\xbe\xef" * max(1, size // 8))
print(row)
PY
  row=$(cat "$tmp/row")
  check "damaged archive: a chunk of finished row $row overwritten" "[ -n '$row' ]"
  "$sd" generate --model tiny "${job[@]}" --archive "$a" --resume 2>"$tmp/err" >/dev/null; rc=$?
  check "damaged archive: --resume gives a clear error or repairs it, never a crash (rc=$rc: $(head -c 300 "$tmp/err"))" \
    "[ $rc -eq 0 ] || { not_a_crash $rc && [ -s $tmp/err ]; }"
  if [ $rc -eq 0 ]; then
    check "damaged archive: the repaired archive equals the reference" "same $ref $a"
  else
    check "damaged archive: the error names the archive and the row" "grep -q '$a' $tmp/err && grep -q -E 'item $row|row $row' $tmp/err"
  fi
  cp "$ref" "$tmp/d2.h5"  # the same damage in a finished archive, for merge
  "$py" - "$tmp/d2.h5" "$row" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    info = f["images"].id.get_chunk_info_by_coord((int(sys.argv[2]), 0, 0, 0))
    off, size = info.byte_offset, info.size
with open(sys.argv[1], "r+b") as f:
    f.seek(off + size // 4); f.write(b"\xde\xad\xbe\xef" * max(1, size // 8))
PY
  "$sd" merge "$tmp/m2.h5" "$tmp/d2.h5" 2>"$tmp/err" >/dev/null; rc=$?
  check "damaged archive: merge gives a clear error, never a crash (rc=$rc: $(head -c 300 "$tmp/err"))" \
    "not_a_crash $rc && grep -q 'd2.h5' $tmp/err && [ ! -e $tmp/m2.h5 ]"
  ;;
*)
  echo "unknown case $case_name"; exit 2 ;;
esac
exit $fail
