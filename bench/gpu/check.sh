#!/usr/bin/env bash
# bench/gpu/check.sh: the GPU check of DESIGN.md §10, in one command, within 8 minutes.
#
# On a machine with an NVIDIA GPU and the CUDA toolkit but possibly without MPI, HDF5, libpng or
# other development packages, and without network, it
#   1. configures a CUDA build with what the machine has (MPI, HDF5, PNG off; BLAS only if
#      OpenBLAS is there; the GPU's own architecture), taking missing build dependencies from
#      .gpu-deps/ (made on a development machine by tools/prepare_gpu_deps.sh and carried along),
#      and cuDNN/cuBLAS from PyTorch's pip wheels when the toolkit lacks them;
#   2. builds the GPU tests (tests/gpu) and the GPU benchmarks (bench/gpu/*_bench.*);
#   3. runs every GPU test (ctest -L gpu), then the benchmarks, and PyTorch on the same op cases
#      (bench/gpu/ops_torch.py) when torch with CUDA is importable, then the sub-checks
#      bench/gpu/<name>_check.sh: attention's, and e2e's (our txt2img pipeline against diffusers end to
#      end on SD 1.5-sized random weights, whose CPU-only preparation, the carried .whl/ wheels and
#      the 2 GB model, runs in the background during the GPU tests);
#   4. writes bench/results/gpu/<date>-<device>.json and .md (device, driver, CUDA, commit, each
#      test's result, each benchmark's numbers), copies them to $OUT when that is set, and prints a
#      short table last.
# Exit status 0 when everything built and no test failed.
#
# Usage: bench/gpu/check.sh [--build-dir DIR] [--budget SECONDS] [--skip-build] [--dtype fp16|bf16|fp32]...
#                           [--no-torch] [--full] [--configure-only]
#   --skip-build          reuse the build directory as it is (a second run on a warm machine)
#   --full                benchmark repeats 7 instead of 3
#   SDMPI_COMMIT=<hash>   the commit to record when the tree has no .git (a copied working tree)
#   SDMPI_CUDA_ARCH=<sm>  CMAKE_CUDA_ARCHITECTURES (default: native, else 90)
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$root/build-gpu-check
budget=470
skip_build=0
configure_only=0
use_torch=1
quick=--quick
dtypes=()
while (($#)); do
  case $1 in
    --build-dir) build=$(realpath -m "$2"); shift ;;
    --budget) budget=$2; shift ;;
    --skip-build) skip_build=1 ;;
    --dtype) dtypes+=("$2"); shift ;;
    --no-torch) use_torch=0 ;;
    --full) quick= ;;
    --configure-only) configure_only=1 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
((${#dtypes[@]})) || dtypes=(fp16)

t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }
left() { echo $((budget - $(elapsed))); }
say() { echo "check [$(elapsed)s]: $*" >&2; }
logs=$build/check-logs
mkdir -p "$logs"
rm -f "$logs"/*.jsonl "$logs"/*.err "$logs"/*.subcheck "$logs"/*.prepare "$logs"/ctest.xml "$logs"/status.env

status_configure=skipped
status_build=skipped

# ---- the machine -----------------------------------------------------------------------------------
gpu_name=unknown
driver=unknown
gpu_memory=unknown
if command -v nvidia-smi >/dev/null 2>&1; then
  IFS=',' read -r gpu_name driver gpu_memory < <(nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader 2>/dev/null | head -n1) || true
  gpu_name=$(echo "${gpu_name:-unknown}" | sed 's/^ *//;s/ *$//')
  driver=$(echo "${driver:-unknown}" | sed 's/^ *//;s/ *$//')
  gpu_memory=$(echo "${gpu_memory:-unknown}" | sed 's/^ *//;s/ *$//')
fi
commit=${SDMPI_COMMIT:-$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
say "device: $gpu_name, driver $driver, $gpu_memory; commit $commit"

# ---- tools and dependencies --------------------------------------------------------------------------
nvcc=${CUDACXX:-$(command -v nvcc || true)}
[[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
cuda_version=unknown
[[ -n $nvcc ]] && cuda_version=$("$nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -n1)
cuda_root=${nvcc:+$(dirname "$(dirname "$(readlink -f "$nvcc")")")}
generator="Unix Makefiles"
command -v ninja >/dev/null 2>&1 && generator=Ninja
deps=$root/.gpu-deps
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DSDMPI_WITH_CUDA=ON -DSDMPI_WITH_MPI=OFF -DSDMPI_WITH_HDF5=OFF
            -DSDMPI_WITH_PNG=OFF -DSDMPI_BUILD_TESTS=ON -DSDMPI_BUILD_BENCH=ON)
[[ -n $nvcc ]] && cmake_args+=(-DCMAKE_CUDA_COMPILER="$nvcc")
if [[ -d $deps ]]; then
  cmake_args+=(-DCMAKE_PREFIX_PATH="$deps")
  export PKG_CONFIG_PATH="$deps/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
fi
pkg_config=$(command -v pkg-config || true)
[[ -z $pkg_config && -x $deps/bin/pkg-config ]] && pkg_config=$deps/bin/pkg-config
[[ -n $pkg_config ]] && cmake_args+=(-DPKG_CONFIG_EXECUTABLE="$pkg_config")
if [[ -n $pkg_config ]] && "$pkg_config" --exists openblas 2>/dev/null; then
  cmake_args+=(-DSDMPI_WITH_BLAS=ON)
else
  cmake_args+=(-DSDMPI_WITH_BLAS=OFF)
fi
arch=${SDMPI_CUDA_ARCH:-}
if [[ -z $arch ]]; then
  if nvidia-smi -L >/dev/null 2>&1; then arch=native; else arch=90; fi
fi
cmake_args+=(-DCMAKE_CUDA_ARCHITECTURES="$arch")

# A CUDA library the toolkit lacks may come with PyTorch's wheels (nvidia-cudnn-cu13, nvidia-cublas).
wheel_dir() {
  python3 -c "import importlib, sys; m = importlib.import_module('nvidia.$1'); print(list(m.__path__)[0])" 2>/dev/null
}
extra_lib_dirs=()
if [[ ! -f $cuda_root/include/cudnn.h && ! -f /usr/include/cudnn.h && ! -f /usr/include/x86_64-linux-gnu/cudnn.h ]]; then
  d=$(wheel_dir cudnn || true)
  lib=$(ls "$d"/lib/libcudnn.so* 2>/dev/null | head -n1)
  if [[ -n $d && -f $d/include/cudnn.h && -n $lib ]]; then
    say "cuDNN from the pip wheel in $d"
    cmake_args+=(-DCUDNN_INCLUDE_DIR="$d/include" -DCUDNN_LIBRARY="$lib")
    extra_lib_dirs+=("$d/lib")
  else
    say "no cuDNN found (toolkit, /usr/include, or the nvidia-cudnn wheel)"
  fi
fi
if [[ ! -f $cuda_root/include/cublasLt.h ]]; then
  d=$(wheel_dir cublas || true)
  if [[ -n $d && -f $d/include/cublasLt.h ]]; then
    say "cuBLAS from the pip wheel in $d"
    blas_lib=$(ls "$d"/lib/libcublas.so* | head -n1)
    lt_lib=$(ls "$d"/lib/libcublasLt.so* | head -n1)
    cmake_args+=(-DCUDA_cublas_LIBRARY="$blas_lib" -DCUDA_cublasLt_LIBRARY="$lt_lib"
                 -DCMAKE_CXX_FLAGS="-I$d/include" -DCMAKE_CUDA_FLAGS="-I$d/include")
    extra_lib_dirs+=("$d/lib")
  fi
fi
for d in "${extra_lib_dirs[@]}"; do export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done

# ---- configure and build -------------------------------------------------------------------------------
gpu_tests=()
for f in "$root"/tests/gpu/*_test.cpp; do [[ -e $f ]] && gpu_tests+=("$(basename "$f" .cpp)"); done
benches=()
for f in "$root"/bench/gpu/*_bench.cpp "$root"/bench/gpu/*_bench.cu; do
  [[ -e $f ]] && benches+=("$(basename "${f%.*}")")
done
# Sub-checks: bench/gpu/<name>_check.sh BUILD_DIR OUT_DIR (e.g. attention's, which runs its own bench
# and torch's against it); their <name>_bench is left to them. A sub-check may say, in a comment line,
# "check.sh: reserve N": N seconds kept for it from the tests, the benchmarks and the sub-checks
# before it; and "check.sh: prepare": `<name>_check.sh --prepare BUILD_DIR OUT_DIR` is started in
# the background after the build (CPU-only work, overlapping the GPU tests).
sub_checks=()
declare -A sub_reserve=()
reserve_total=0
for f in "$root"/bench/gpu/*_check.sh; do
  [[ -e $f && $(basename "$f") != check.sh ]] || continue
  c=$(basename "$f" _check.sh)
  sub_checks+=("$c")
  r=$(sed -n 's/^# check\.sh: reserve \([0-9][0-9]*\).*/\1/p' "$f" | head -n1)
  sub_reserve[$c]=${r:-0}
  reserve_total=$((reserve_total + ${r:-0}))
done
if ((!skip_build)); then
  say "configure ($generator, CUDA $cuda_version, arch $arch)"
  if cmake -S "$root" -B "$build" -G "$generator" "${cmake_args[@]}" >"$logs/configure.log" 2>&1; then
    status_configure=ok
    ((configure_only)) && { say "configured in $build"; exit 0; }
    say "build: ${gpu_tests[*]} ${benches[*]}"
    keep_going=()
    [[ $generator == Ninja ]] && keep_going=(-- -k 0)
    build_budget=$(($(left) - 200))
    ((build_budget < 60)) && build_budget=60
    if timeout "$build_budget" cmake --build "$build" -j "$(nproc)" --target "${gpu_tests[@]}" "${benches[@]}" \
        "${keep_going[@]}" >"$logs/build.log" 2>&1; then
      status_build=ok
    else
      status_build=failed
      say "build failed (some targets may still have been built): see $logs/build.log"
      grep -E "error|Error" "$logs/build.log" | head -n 20 >&2
    fi
  else
    status_configure=failed
    say "configure failed: see $logs/configure.log"
    tail -n 25 "$logs/configure.log" >&2
  fi
else
  status_configure=reused
  status_build=reused
fi

# ---- background preparation of sub-checks ----------------------------------------------------------------
prepare_pids=()
for c in "${sub_checks[@]}"; do
  grep -q '^# check\.sh: prepare' "$root/bench/gpu/${c}_check.sh" || continue
  mkdir -p "$logs/$c"
  say "sub-check ${c}_check.sh --prepare, in the background"
  timeout "$(($(left) > 60 ? $(left) : 60))" bash "$root/bench/gpu/${c}_check.sh" --prepare "$build" "$logs/$c" \
    >"$logs/$c.prepare" 2>&1 &
  prepare_pids+=($!)
done

# ---- tests -------------------------------------------------------------------------------------------
ctest_seconds=0
if [[ -f $build/CTestTestfile.cmake ]]; then
  # Leave about three minutes for the benchmarks, plus what the sub-checks reserve.
  test_budget=$(($(left) - 190 - reserve_total))
  ((test_budget < 90)) && test_budget=90
  say "tests: ctest -L gpu (budget ${test_budget}s)"
  ts=$(date +%s)
  timeout "$test_budget" ctest --test-dir "$build" -L gpu -j 4 --timeout 240 --output-on-failure \
    --output-junit "$logs/ctest.xml" >"$logs/ctest.log" 2>&1
  echo "ctest_rc=$?" >>"$logs/status.env"
  ctest_seconds=$(($(date +%s) - ts))
fi

# ---- benchmarks ----------------------------------------------------------------------------------------
dtype_args=()
for t in "${dtypes[@]}"; do dtype_args+=(--dtype "$t"); done
for b in "${benches[@]}"; do
  [[ " ${sub_checks[*]} " == *" ${b%_bench} "* ]] && continue
  exe=$build/bench/$b
  [[ -x $exe ]] || { say "benchmark $b was not built"; continue; }
  remaining=$(($(left) - 45 - reserve_total))
  ((remaining < 10)) && { say "no time left for $b"; continue; }
  args=()
  [[ $b == ops_bench ]] && args=("${dtype_args[@]}" $quick)
  say "benchmark $b ${args[*]}"
  timeout "$remaining" "$exe" "${args[@]}" >"$logs/$b.jsonl" 2>"$logs/$b.err" || say "$b ended with status $?"
done
torch_version=none
if ((use_torch)) && python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  torch_version=$(python3 -c "import torch; print(torch.__version__)")
  remaining=$(($(left) - 20 - reserve_total))
  if ((remaining >= 10)); then
    say "PyTorch $torch_version on the same cases"
    timeout "$remaining" python3 "$root/bench/gpu/ops_torch.py" "${dtype_args[@]}" $quick \
      >"$logs/ops_torch.jsonl" 2>"$logs/ops_torch.err" || say "ops_torch ended with status $?"
  fi
fi
reserve_later=$reserve_total
for c in "${sub_checks[@]}"; do
  reserve_later=$((reserve_later - ${sub_reserve[$c]}))
  remaining=$(($(left) - 15 - reserve_later))
  ((remaining < 20)) && { say "no time left for ${c}_check.sh"; continue; }
  say "sub-check ${c}_check.sh (up to ${remaining}s)"
  mkdir -p "$logs/$c"
  SUBCHECK_BUDGET=$((remaining - 5)) timeout "$remaining" bash "$root/bench/gpu/${c}_check.sh" "$build" "$logs/$c" \
    >"$logs/$c.subcheck" 2>&1 || say "${c}_check.sh ended with status $?"
done
# A preparation still running (its sub-check had no time) must not outlive the check.
for p in "${prepare_pids[@]}"; do
  kill -0 "$p" 2>/dev/null && { kill -TERM -- -"$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; }
done
wait 2>/dev/null

# ---- results ---------------------------------------------------------------------------------------------
results_dir=$root/bench/results/gpu
mkdir -p "$results_dir"
export CHECK_ROOT=$root CHECK_LOGS=$logs CHECK_RESULTS=$results_dir CHECK_GPU="$gpu_name" CHECK_DRIVER="$driver" \
  CHECK_GPU_MEMORY="$gpu_memory" CHECK_CUDA="$cuda_version" CHECK_COMMIT="$commit" CHECK_ARCH="$arch" \
  CHECK_CONFIGURE=$status_configure CHECK_BUILD=$status_build CHECK_CTEST_SECONDS=$ctest_seconds \
  CHECK_TORCH="$torch_version" CHECK_ELAPSED=$(elapsed)
python3 - <<'PY'
import datetime, glob, json, os, re, xml.etree.ElementTree as ET

env = os.environ
logs, results = env["CHECK_LOGS"], env["CHECK_RESULTS"]
now = datetime.datetime.now(datetime.timezone.utc)
slug = re.sub(r"[^a-z0-9]+", "-", env["CHECK_GPU"].lower()).strip("-") or "unknown-gpu"
base = os.path.join(results, f"{now:%Y-%m-%d}-{slug}")

def clean(name):
    return re.sub(r"\s+#\s*GetParam\(\).*$", "", name or "").strip()

tests = []
junit = os.path.join(logs, "ctest.xml")
if os.path.exists(junit):
    try:
        for case in ET.parse(junit).getroot().iter("testcase"):
            status = case.get("status", "run")
            failure, skipped, out = case.find("failure"), case.find("skipped"), case.find("system-out")
            text = out.text if out is not None and out.text else ""
            if failure is not None or status == "fail":
                result = "failed"
            elif skipped is not None and "SKIP" in (skipped.get("message") or "").upper():
                result = "skipped"
            elif status in ("notrun", "disabled"):
                result = "not run"
            else:
                result = "passed"
            detail = ""
            if result == "failed":
                lines = [l.strip() for l in text.splitlines()
                         if re.search(r"Failure|error|Expected|Which is|relative|differ|off by|exception", l, re.I)]
                detail = " | ".join(lines[:5])[:700]
                if not detail and failure is not None:
                    detail = (failure.get("message") or "")[:300]
            elif result == "skipped":
                m = re.search(r"Skipped\s*\n(.*)", text)
                detail = (m.group(1) if m else "")[:200]
            tests.append({"name": clean(case.get("name")), "result": result,
                          "seconds": float(case.get("time", 0) or 0), "detail": detail})
    except ET.ParseError as e:
        tests.append({"name": "ctest junit output", "result": "failed", "seconds": 0, "detail": f"unreadable: {e}"})
elif os.path.exists(os.path.join(logs, "ctest.log")):
    # ctest was stopped before writing its junit file: take what its log says.
    for line in open(os.path.join(logs, "ctest.log"), errors="replace"):
        m = re.match(r"\s*\d+/\d+ Test\s+#\d+: (.*?) \.{2,}\s*(\*\*\*)?(\w+).*?([\d.]+) sec", line)
        if m:
            word = m.group(3).lower()
            result = "passed" if word == "passed" else "skipped" if word in ("skipped", "not") else "failed"
            tests.append({"name": clean(m.group(1)), "result": result, "seconds": float(m.group(4)), "detail": ""})
    tests.append({"name": "ctest", "result": "not run", "seconds": 0,
                  "detail": "stopped by the time budget; tests after the last listed did not run"})

def read_jsonl(path):
    rows = []
    for line in open(path, errors="replace"):
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows

benchmarks, raw_outputs = [], {}
for path in sorted(glob.glob(os.path.join(logs, "*.jsonl"))):
    name = os.path.basename(path)[:-6]
    rows = read_jsonl(path)
    for r in rows:
        r.setdefault("bench", name)
    benchmarks += rows
    if not rows:
        raw_outputs[name] = open(path, errors="replace").read()[-4000:]
    err = os.path.join(logs, name + ".err")
    if os.path.exists(err) and os.path.getsize(err):
        raw_outputs[name + " (stderr)"] = open(err, errors="replace").read()[-2000:]

sub_checks = {}
for path in sorted(glob.glob(os.path.join(logs, "*.subcheck"))):
    name = os.path.basename(path)[: -len(".subcheck")]
    entry = {"output": open(path, errors="replace").read()[-6000:], "files": {}}
    for jf in sorted(glob.glob(os.path.join(logs, name, "*.json"))):
        try:
            if os.path.getsize(jf) < 2_000_000:
                entry["files"][os.path.basename(jf)] = json.load(open(jf))
        except (OSError, json.JSONDecodeError):
            pass
    sub_checks[name] = entry

counts = {k: sum(1 for t in tests if t["result"] == k) for k in ("passed", "failed", "skipped", "not run")}
record = {
    "format": "sd_mpi-gpu-check", "format_version": 1, "date": now.isoformat(timespec="seconds"),
    "device": env["CHECK_GPU"], "gpu_memory": env["CHECK_GPU_MEMORY"], "driver": env["CHECK_DRIVER"],
    "cuda": env["CHECK_CUDA"], "cuda_architectures": env["CHECK_ARCH"], "commit": env["CHECK_COMMIT"],
    "torch": env["CHECK_TORCH"], "configure": env["CHECK_CONFIGURE"], "build": env["CHECK_BUILD"],
    "ctest_seconds": int(env["CHECK_CTEST_SECONDS"]), "total_seconds": int(env["CHECK_ELAPSED"]),
    "test_counts": counts, "tests": tests, "benchmarks": benchmarks, "raw_outputs": raw_outputs,
    "sub_checks": sub_checks,
}
with open(base + ".json", "w") as f:
    json.dump(record, f, indent=1)

# Benchmark table: one row per (op, case, dtype) with sd_mpi and torch side by side.
rows, order = {}, []
for b in benchmarks:
    if b.get("bench") != "cuda_ops" or "ms" not in b:
        continue
    key = (b.get("op", "?"), b.get("case", "?"), b.get("dtype", "?"))
    if key not in rows:
        rows[key] = {}
        order.append(key)
    rows[key][b.get("impl", "sd_mpi")] = b

def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"

table = ["| op | case | dtype | sd_mpi ms | torch ms | torch/sd_mpi | sd_mpi TFLOP/s | sd_mpi GB/s |",
         "|---|---|---|---|---|---|---|---|"]
for key in order:
    ours, theirs = rows[key].get("sd_mpi", {}), rows[key].get("torch", {})
    ratio = theirs["ms"] / ours["ms"] if ours.get("ms") and theirs.get("ms") else None
    table.append(f"| {key[0]} | {key[1]} | {key[2]} | {fmt(ours.get('ms'), '.4f')} | {fmt(theirs.get('ms'), '.4f')} | "
                 f"{fmt(ratio, '.2f')} | {fmt(ours.get('tflops'), '.1f')} | {fmt(ours.get('gbps'), '.0f')} |")
other = [b for b in benchmarks if b.get("bench") != "cuda_ops"]

md = [f"# GPU check {now:%Y-%m-%d %H:%M} UTC: {env['CHECK_GPU']}", "",
      f"- device: {env['CHECK_GPU']} ({env['CHECK_GPU_MEMORY']}), driver {env['CHECK_DRIVER']}, CUDA {env['CHECK_CUDA']}, "
      f"architectures {env['CHECK_ARCH']}",
      f"- commit: {env['CHECK_COMMIT']}; PyTorch: {env['CHECK_TORCH']}",
      f"- configure: {env['CHECK_CONFIGURE']}; build: {env['CHECK_BUILD']}; total {env['CHECK_ELAPSED']} s",
      f"- tests (ctest -L gpu, {env['CHECK_CTEST_SECONDS']} s): {counts['passed']} passed, {counts['failed']} failed, "
      f"{counts['skipped']} skipped, {counts['not run']} not run", ""]
if tests:
    md += ["## Tests", "", "| test | result | s | detail |", "|---|---|---|---|"]
    md += [f"| {t['name']} | {t['result']} | {t['seconds']:.2f} | {t['detail'].replace('|', '/')} |" for t in tests]
    md.append("")
if order:
    md += ["## Ops (median per call, CUDA events)", ""] + table + [""]
if other:
    md += ["## Other benchmarks", "", "```"] + [json.dumps(b) for b in other] + ["```", ""]
for name, entry in sub_checks.items():
    md += [f"## {name} (bench/gpu/{name}_check.sh)", "", "```", entry["output"].rstrip(), "```", ""]
for name, text in raw_outputs.items():
    md += [f"## Output of {name}", "", "```", text.rstrip(), "```", ""]
with open(base + ".md", "w") as f:
    f.write("\n".join(md))

# The short table, last on the terminal.
print()
print(f"sd_mpi GPU check: {env['CHECK_GPU']}, driver {env['CHECK_DRIVER']}, CUDA {env['CHECK_CUDA']}, "
      f"commit {env['CHECK_COMMIT']}, {env['CHECK_ELAPSED']} s")
print(f"configure {env['CHECK_CONFIGURE']}, build {env['CHECK_BUILD']}; tests: {counts['passed']} passed, "
      f"{counts['failed']} failed, {counts['skipped']} skipped, {counts['not run']} not run")
for t in tests:
    if t["result"] == "failed":
        print(f"  FAILED {t['name']}: {t['detail'][:200]}")
if order:
    print(f"{'op':<18} {'case':<38} {'dtype':<5} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} {'TFLOP/s':>8} {'GB/s':>7}")
    for key in order:
        ours, theirs = rows[key].get("sd_mpi", {}), rows[key].get("torch", {})
        ratio = theirs["ms"] / ours["ms"] if ours.get("ms") and theirs.get("ms") else None
        print(f"{key[0][:18]:<18} {key[1][:38]:<38} {key[2]:<5} {fmt(ours.get('ms'), '9.4f'):>9} "
              f"{fmt(theirs.get('ms'), '9.4f'):>9} {fmt(ratio, '6.2f'):>6} {fmt(ours.get('tflops'), '8.1f'):>8} "
              f"{fmt(ours.get('gbps'), '7.0f'):>7}")
# Sub-checks that summarise themselves in a table (e2e: ours vs diffusers end to end).
for name, entry in sub_checks.items():
    for data in entry["files"].values():
        if isinstance(data, dict) and isinstance(data.get("table"), str):
            print(data["table"])
print(f"results: {base}.json, {base}.md")
with open(os.path.join(logs, "results.env"), "w") as f:
    f.write(f"results_base={base}\nfailed={counts['failed']}\nskipped={counts['skipped']}\n")
PY
py_rc=$?

results_base=
failed=1
skipped=0
[[ -f $logs/results.env ]] && . "$logs/results.env"
if [[ $gpu_name != unknown && $skipped != 0 ]]; then
  echo "check.sh: $skipped tests skipped on a machine with a GPU ($gpu_name): see the results file" >&2
  failed=$((failed + skipped))
fi
if [[ -n ${OUT:-} && -n $results_base ]]; then
  cp "$results_base.json" "$results_base.md" "$OUT/" 2>/dev/null
  tail -c 200000 "$logs/ctest.log" >"$OUT/ctest-tail.log" 2>/dev/null
  tail -c 100000 "$logs/build.log" >"$OUT/build-tail.log" 2>/dev/null
fi
((py_rc == 0)) || exit 1
[[ $status_configure != failed && $status_build != failed && $failed == 0 ]] || exit 1
exit 0
