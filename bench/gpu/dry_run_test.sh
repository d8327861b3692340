#!/usr/bin/env bash
# The GPU window scripts, tested on a machine without a GPU (ctest: gpu_window.dry_run).
#
# Runs bench/gpu/window.sh --dry-run (full and --smoke) and bench/gpu/deep.sh --dry-run on BUILD_DIR
# (reused, never reconfigured), then checks that each wrote its results files under its $OUT, that
# they parse and have the results shape (results_table.py --validate), that every stage is there
# with a verdict (the benchmarks "skipped (dry run)"), and that the window log names each stage.
# In a CUDA build the GPU tests run and skip, and the smoke set must name tests that exist. Then
# tools/prepare_window.sh --check-only must pass, and fail once 80 MiB more are counted.
#
#   bench/gpu/dry_run_test.sh BUILD_DIR
set -u
build=$(realpath "${1:?usage: dry_run_test.sh BUILD_DIR}")
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sdmpi-window-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

check_results() {  # json expected-stages...
  local json=$1
  shift
  [[ -s $json ]] || { bad "$json was not written"; return; }
  python3 "$here/results_table.py" --validate "$json" || { bad "$json has the wrong shape"; return; }
  python3 - "$json" "$@" <<'PY' || bad "$json: stages missing or wrong (see above)"
import json, sys
r = json.load(open(sys.argv[1]))
stages = {s["name"]: s for s in r["stages"]}
problems = [f"stage {n} missing" for n in sys.argv[2:] if n not in stages]
for name, s in stages.items():
    if name.startswith("bench.") and not (s["status"] == "skipped" and "dry run" in s["detail"]):
        problems.append(f"{name} is '{s['status']}: {s['detail']}', not skipped (dry run)")
    if s["status"] in ("failed", "timeout", "killed", "running"):
        problems.append(f"{name}: {s['status']}: {s['detail']}")
if "dry-run" not in r["mode"]:
    problems.append(f"mode is {r['mode']!r}")
if r["test_counts"]["failed"]:
    problems.append(f"{r['test_counts']['failed']} tests failed")
for p in problems:
    print(sys.argv[1] + ": " + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

# ---- window.sh --dry-run ---------------------------------------------------------------------------------
OUT=$tmp/window bash "$here/window.sh" --dry-run --build-dir "$build" --work "$tmp/window-work" >"$tmp/window.stdout" 2>&1
rc=$?
((rc == 0)) || { bad "window.sh --dry-run exited $rc"; tail -n 30 "$tmp/window.stdout" >&2; }
check_results "$tmp/window/results.json" device configure build smoke tests bench.ops_bench bench.ops_torch \
  bench.attention bench.e2e
[[ -s $tmp/window/results.md ]] || bad "window.sh wrote no results.md"
for stage in device configure build smoke tests bench.e2e; do
  grep -q "stage $stage" "$tmp/window/window.log" || bad "window.log does not mention stage $stage"
done
tail -n 3 "$tmp/window.stdout" | grep -q 'commit them as bench/results/gpu/' || bad "window.sh did not print the results' name last"
if ctest --test-dir "$build" -N -L gpu | grep -q 'Test *#'; then
  # A CUDA build: the smoke tests ran (and skipped without a GPU) through ctest's JUnit output.
  python3 - "$tmp/window/results.json" "$here/smoke_tests.txt" <<'PY' || bad "the smoke tests did not all run"
import json, sys
r = json.load(open(sys.argv[1]))
want = {l.split()[2] for l in open(sys.argv[2]) if l.strip() and not l.startswith("#")}
ran = {t["name"] for t in r["tests"] if t["stage"] == "smoke"}
missing = want - ran
if missing:
    print("smoke tests not in the results: " + ", ".join(sorted(missing)), file=sys.stderr)
sys.exit(1 if missing else 0)
PY
fi

# ---- window.sh --smoke --dry-run: no benchmarks ----------------------------------------------------------------
OUT=$tmp/smoke bash "$here/window.sh" --smoke --dry-run --build-dir "$build" --work "$tmp/smoke-work" >"$tmp/smoke.stdout" 2>&1 ||
  bad "window.sh --smoke --dry-run failed"
check_results "$tmp/smoke/results.json" device configure build smoke
grep -q '"bench\.' "$tmp/smoke/results.json" && bad "--smoke ran benchmark stages"

# ---- deep.sh --dry-run ----------------------------------------------------------------------------------------
OUT=$tmp/deep bash "$here/deep.sh" --dry-run --build-dir "$build" --work "$tmp/deep-work" >"$tmp/deep.stdout" 2>&1
rc=$?
((rc == 0)) || { bad "deep.sh --dry-run exited $rc"; tail -n 30 "$tmp/deep.stdout" >&2; }
check_results "$tmp/deep/deep.json" device configure build model memcheck racecheck ncu
python3 - "$tmp/deep/deep.json" <<'PY' || bad "deep.json lacks the sanitizer rows or the ncu summary"
import json, sys
r = json.load(open(sys.argv[1]))
tools = {s["tool"] for s in r.get("sanitizer", [])}
ok = tools == {"memcheck", "racecheck"} and isinstance(r.get("ncu"), dict) and r["ncu"].get("kernels") == []
sys.exit(0 if ok else 1)
PY
n=$(ls "$tmp/deep" | wc -l)
((n <= 8)) || bad "deep.sh left $n files under \$OUT; a device call brings back 8"
n=$(ls "$tmp/window" | wc -l)
((n <= 8)) || bad "window.sh left $n files under \$OUT; a device call brings back 8"

# ---- the carried set's size check ------------------------------------------------------------------------------
bash "$root/tools/prepare_window.sh" --check-only >"$tmp/prepare.out" 2>&1 || { bad "prepare_window.sh --check-only failed"; cat "$tmp/prepare.out" >&2; }
grep -q 'run(command="SDMPI_COMMIT=' "$tmp/prepare.out" || bad "prepare_window.sh printed no device call"
if bash "$root/tools/prepare_window.sh" --check-only --extra-mib 80 >"$tmp/prepare-big.out" 2>&1; then
  bad "prepare_window.sh accepted more than 64 MiB"
fi
grep -q 'over the 64 MiB' "$tmp/prepare-big.out" || bad "prepare_window.sh did not say by how much it is over"

((fail == 0)) && echo "gpu window dry runs: ok (window, smoke, deep; results under \$OUT parse; size check)"
exit $fail
