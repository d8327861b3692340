#!/usr/bin/env bash
# MPI tests of the cluster layer with the stand-in job (tests/mpi/cluster_harness.cpp):
# every -np and distribution writes every item exactly once with identical content; a failed item
# is recorded and the job goes on; a signal on any rank stops every rank with exit 75 and loses
# nothing that finished; --fail-fast stops with exit 1.
set -uo pipefail
harness=$1
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
mpirun=(mpirun --oversubscribe -np)
fail=0
check() { if ! eval "$2"; then echo "FAIL: $1"; fail=1; else echo "ok: $1"; fi; }
canon() { grep -v '^summary' "$1" | sort -n; }

"${mpirun[@]}" 1 "$harness" "$tmp/ref" 23 3 static >/dev/null 2>&1; rc=$?
check "np=1 runs (rc=$rc)" "[ $rc -eq 0 ]"
check "np=1 writes 23 items" "[ \$(canon $tmp/ref | wc -l) -eq 23 ]"
for np in 1 2 3 4; do
  for dist in static dynamic; do
    "${mpirun[@]}" $np "$harness" "$tmp/o$np$dist" 23 3 $dist slow=1 >"$tmp/log$np$dist" 2>&1; rc=$?
    check "np=$np $dist exit 0 (rc=$rc)" "[ $rc -eq 0 ]"
    check "np=$np $dist same items and bytes as np=1" "diff <(canon $tmp/ref) <(canon $tmp/o$np$dist) >/dev/null"
    check "np=$np $dist summary" "grep -q 'summary done=23 failed=0 interrupted=0' $tmp/o$np$dist"
  done
done
"${mpirun[@]}" 3 "$harness" "$tmp/f" 12 2 dynamic fail=5 >/dev/null 2>&1; rc=$?
check "a failed item is recorded and the job goes on (rc=$rc, want 3)" "[ $rc -eq 3 ] && grep -q '^5 0 ' $tmp/f && grep -q 'done=11 failed=1' $tmp/f"
"${mpirun[@]}" 2 "$harness" "$tmp/ff" 40 1 static fail=1 fail-fast >/dev/null 2>&1; rc=$?
check "--fail-fast stops the job (rc=$rc, want 1)" "[ $rc -eq 1 ] && [ \$(canon $tmp/ff | wc -l) -lt 40 ]"
for dist in static dynamic; do
  "${mpirun[@]}" 3 "$harness" "$tmp/s$dist" 60 2 $dist stop=2:2 >"$tmp/slog" 2>&1; rc=$?
  n=$(canon "$tmp/s$dist" | wc -l)
  check "SIGUSR1 on rank 2 stops all ranks with 75 ($dist, rc=$rc, $n written)" "[ $rc -eq 75 ] && [ $n -ge 2 ] && [ $n -lt 60 ]"
  check "after a stop every written item is unique and intact ($dist)" \
    "[ \$(canon $tmp/s$dist | cut -d' ' -f1 | sort -u | wc -l) -eq $n ] && join <(canon $tmp/s$dist | sort -k1,1) <(canon $tmp/ref | sort -k1,1) | awk '\$3!=\$5{bad=1} END{exit bad}'"
done
exit $fail
