# bench/gpu/window_lib.sh: what the GPU window scripts (window.sh, deep.sh) share, sourced by both.
#
# The idea: a lent GPU comes for a few minutes, and only the files a command writes under $OUT come
# back. So everything is a *stage* run under its own `timeout`, and after each stage the results
# file is rewritten ($OUT/results.json/.md by results_table.py, window.log appended): whatever kills
# the window (our own budget, the device call's limit) leaves everything done so far. A TERM (the
# `timeout` each script puts around itself) ends the stage in flight, marks it "killed", writes the
# results and exits 124.
#
# The caller sets, before wl_setup: kind (window|deep), budget (seconds), dry_run (0|1), build,
# work, out (may be empty: defaults below), skip_build (0|1). It then calls wl_setup, and
# wl_configure and wl_build for its targets, then its own stages through wl_stage/wl_record.
# Build dependencies a device lacks come from .gpu-deps/ (tools/prepare_gpu_deps.sh), Python
# packages from .whl/ (tools/prepare_gpu_wheels.sh); tools/prepare_window.sh prepares both.

wl_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
wl_root=$(cd "$wl_here/../.." && pwd)

# Re-runs the calling script under `timeout` (budget + 30 s for the last results), once. Every
# stage has its own shorter timeout; this one is the guarantee that the window ends.
wl_self_timeout() {  # script args...
  if [[ -z ${WINDOW_UNDER_TIMEOUT:-} ]]; then
    export WINDOW_UNDER_TIMEOUT=1
    exec timeout --kill-after=20 $((budget + 30)) bash "$@"
  fi
}

wl_setup() {
  t0=$(date +%s)
  # Offline: nothing outside the device can be reached, and a library that tries waits for a
  # network timeout instead of failing at once.
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PIP_NO_INDEX=1
  export HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
  if [[ -z $work ]]; then
    if ((dry_run)); then work=$(mktemp -d "${TMPDIR:-/tmp}/sdmpi-$kind.XXXXXX"); else work=$build/$kind; fi
  fi
  [[ -n $out ]] || out=${OUT:-$work/out}
  mkdir -p "$work" "$out" || exit 2
  work=$(realpath "$work")
  out=$(realpath "$out")
  rm -rf "${work:?}"/* 2>/dev/null
  mkdir -p "$out"
  log=$out/$kind.log
  : >"$log"
  stage_pid=
  current_stage=
  export WINDOW_MODE=$mode WINDOW_BUDGET=$budget
  export WINDOW_COMMIT=${SDMPI_COMMIT:-$(git -C "$wl_root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
  if [[ $WINDOW_COMMIT != unknown && -z ${SDMPI_COMMIT:-} ]] &&
     ! git -C "$wl_root" diff --quiet HEAD -- src include kernels tests bench CMakeLists.txt 2>/dev/null; then
    WINDOW_COMMIT+="-dirty"
  fi
  trap wl_on_term TERM INT
  wl_say "$kind ($mode), budget ${budget}s, build $build, work $work, out $out, commit $WINDOW_COMMIT"
}

wl_elapsed() { echo $(($(date +%s) - t0)); }
wl_left() { echo $((budget - $(wl_elapsed))); }
wl_say() { echo "$kind [$(wl_elapsed)s]: $*" | tee -a "$log" >&2; }

wl_results() {  # [--final]: rewrite $out/results.json/.md (deep.json/.md for deep.sh)
  local store=()
  [[ ${1:-} == --final ]] && ((!dry_run)) && store=(--store "$wl_root/bench/results/gpu")
  WINDOW_ELAPSED=$(wl_elapsed) WINDOW_ARCH=${arch:-unknown} python3 "$wl_here/results_table.py" \
    --work "$work" --out "$out" --kind "$kind" "$@" "${store[@]}"
}

# A stage's verdict: one line in stages.tsv, then the results file rewritten.
wl_record() {  # name status seconds detail
  local detail=${4//$'\t'/ }
  detail=${detail//$'\n'/ }
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${detail:0:400}" >>"$work/stages.tsv"
  wl_say "stage $1: $2 (${3}s)${detail:+: ${detail:0:200}}"
  wl_results >/dev/null 2>>"$log" || wl_say "results_table.py failed (see above)"
}

# Runs a command as a stage: under `timeout CAP`, in the background so that a TERM ends it at once
# (timeout leads its own process group), output into STAGE_LOG (stdout into --stdout FILE if
# given). Sets stage_seconds and stage_log; returns the command's status (124/137: its timeout).
wl_stage() {  # name cap [--stdout FILE] -- command...
  local name=$1 cap=$2 stdout=
  shift 2
  if [[ $1 == --stdout ]]; then stdout=$2; shift 2; fi
  [[ $1 == -- ]] && shift
  stage_log=$work/$name.log
  current_stage=$name
  echo "stage=$name" >"$work/running.env"
  wl_results >/dev/null 2>>"$log"
  wl_say "stage $name (up to ${cap}s): $*"
  local start rc
  start=$(date +%s)
  if [[ -n $stdout ]]; then
    timeout --kill-after=10 "$cap" "$@" >"$stdout" 2>"$stage_log" &
  else
    timeout --kill-after=10 "$cap" "$@" >"$stage_log" 2>&1 &
  fi
  stage_pid=$!
  wait "$stage_pid"
  rc=$?
  stage_pid=
  current_stage=
  rm -f "$work/running.env"
  stage_seconds=$(($(date +%s) - start))
  wl_append_log "$name" "$stage_log"
  return $rc
}

wl_append_log() {  # name file: the file's last 300 lines into the window log
  [[ -s $2 ]] || return 0
  { echo "---- $1: $(basename "$2") (last 300 lines)"; tail -n 300 "$2"; echo "----"; } >>"$log"
}

# The status word of a finished stage command.
wl_status_of() {  # rc
  case $1 in
    0) echo ok ;;
    124|137) echo timeout ;;
    *) echo failed ;;
  esac
}

wl_on_term() {
  trap '' TERM INT
  if [[ -n $stage_pid ]]; then
    kill -TERM -- -"$stage_pid" 2>/dev/null || kill -TERM "$stage_pid" 2>/dev/null
  fi
  [[ -n $current_stage && -f $work/$current_stage.log ]] && wl_append_log "$current_stage" "$work/$current_stage.log"
  rm -f "$work/running.env"
  [[ -n $current_stage ]] &&
    wl_record "$current_stage" killed "$(wl_elapsed)" "the window's time limit ended it (elapsed $(wl_elapsed)s of ${budget}s)"
  wl_background_stop
  wl_results --final 2>>"$log"
  exit 124
}

# Background jobs (the e2e preparation) must not outlive the window.
wl_background_pids=()
wl_background_stop() {
  local p
  for p in "${wl_background_pids[@]}"; do
    kill -0 "$p" 2>/dev/null && { kill -TERM -- -"$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; }
  done
  wait 2>/dev/null
}

# ---- the machine's tools and the CMake arguments ---------------------------------------------------
# On the device: CUDA, cmake, ninja, Python with PyTorch; no MPI, HDF5 or libpng development files,
# maybe no pkg-config or the small libraries (.gpu-deps has them); cuDNN/cuBLAS headers may come
# only with PyTorch's pip wheels (nvidia-cudnn-cu13, nvidia-cublas).
wl_cmake_setup() {
  nvcc=${CUDACXX:-$(command -v nvcc || true)}
  [[ -z $nvcc && -x /usr/local/cuda/bin/nvcc ]] && nvcc=/usr/local/cuda/bin/nvcc
  local cuda_root=${nvcc:+$(dirname "$(dirname "$(readlink -f "$nvcc")")")}
  generator="Unix Makefiles"
  command -v ninja >/dev/null 2>&1 && generator=Ninja
  local deps=$wl_root/.gpu-deps
  cmake_args=(-DCMAKE_BUILD_TYPE=Release -DSDMPI_WITH_CUDA=ON -DSDMPI_WITH_MPI=OFF -DSDMPI_WITH_HDF5=OFF
              -DSDMPI_WITH_PNG=OFF -DSDMPI_BUILD_TESTS=ON -DSDMPI_BUILD_BENCH=ON)
  [[ -n $nvcc ]] && cmake_args+=(-DCMAKE_CUDA_COMPILER="$nvcc")
  if [[ -d $deps ]]; then
    cmake_args+=(-DCMAKE_PREFIX_PATH="$deps")
    export PKG_CONFIG_PATH="$deps/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  fi
  local pkg_config
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
  local extra_lib_dirs=() d lib
  if [[ -n $cuda_root && ! -f $cuda_root/include/cudnn.h && ! -f /usr/include/cudnn.h &&
        ! -f /usr/include/x86_64-linux-gnu/cudnn.h ]]; then
    d=$(wl_wheel_dir cudnn || true)
    lib=$(ls "$d"/lib/libcudnn.so* 2>/dev/null | head -n1)
    if [[ -n $d && -f $d/include/cudnn.h && -n $lib ]]; then
      wl_say "cuDNN from the pip wheel in $d"
      cmake_args+=(-DCUDNN_INCLUDE_DIR="$d/include" -DCUDNN_LIBRARY="$lib")
      extra_lib_dirs+=("$d/lib")
    else
      wl_say "no cuDNN found (toolkit, /usr/include, or the nvidia-cudnn wheel)"
    fi
  fi
  if [[ -n $cuda_root && ! -f $cuda_root/include/cublasLt.h ]]; then
    d=$(wl_wheel_dir cublas || true)
    if [[ -n $d && -f $d/include/cublasLt.h ]]; then
      wl_say "cuBLAS from the pip wheel in $d"
      cmake_args+=(-DCUDA_cublas_LIBRARY="$(ls "$d"/lib/libcublas.so* | head -n1)"
                   -DCUDA_cublasLt_LIBRARY="$(ls "$d"/lib/libcublasLt.so* | head -n1)"
                   -DCMAKE_CXX_FLAGS="-I$d/include" -DCMAKE_CUDA_FLAGS="-I$d/include")
      extra_lib_dirs+=("$d/lib")
    fi
  fi
  for d in "${extra_lib_dirs[@]}"; do export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; done
}

wl_wheel_dir() {  # nvidia.<name> package folder of PyTorch's CUDA wheels
  python3 -c "import importlib; m = importlib.import_module('nvidia.$1'); print(list(m.__path__)[0])" 2>/dev/null
}

# ---- configure and build -----------------------------------------------------------------------------
# The dry run reuses the build folder as it is (CI built the GPU targets compile-only); it never
# reconfigures it, which would change another build's options.
wl_configure() {
  wl_cmake_setup
  if ((dry_run)); then
    if [[ -f $build/CTestTestfile.cmake ]]; then
      wl_record configure skipped 0 "dry run: reusing $build; would run: cmake -G '$generator' ${cmake_args[*]}"
    else
      wl_record configure failed 0 "dry run: $build is not a configured build folder (give --build-dir)"
    fi
    return
  fi
  if ((skip_build)); then
    wl_record configure skipped 0 "--skip-build: reusing $build"
    return
  fi
  local rc
  wl_stage configure "$(( $(wl_left) > 60 ? $(wl_left) / 4 : 60 ))" -- cmake -S "$wl_root" -B "$build" -G "$generator" "${cmake_args[@]}"
  rc=$?
  wl_record configure "$(wl_status_of $rc)" "$stage_seconds" "$generator, CUDA arch $arch$( ((rc)) && tail -n 3 "$stage_log" | tr '\n' ' ')"
}

wl_build() {  # targets...
  local rc missing=() t
  if ((dry_run || skip_build)); then
    for t in "$@"; do [[ -x $build/tests/$t || -x $build/bench/$t ]] || missing+=("$t"); done
    wl_record build skipped 0 "$( ((dry_run)) && echo "dry run" || echo "--skip-build"): reusing $build; $(( $# - ${#missing[@]} ))/$# targets there${missing[*]:+ (not built: ${missing[*]})}"
    return
  fi
  if ! grep -q $'^configure\tok' "$work/stages.tsv"; then
    wl_record build skipped 0 "configure did not succeed"
    return
  fi
  local keep_going=() cap
  [[ $generator == Ninja ]] && keep_going=(-- -k 0)
  cap=$(( $(wl_left) - ${build_keep:-200} ))
  ((cap < 60)) && cap=60
  wl_stage build "$cap" -- cmake --build "$build" -j "$(nproc)" --target "$@" "${keep_going[@]}"
  rc=$?
  for t in "$@"; do [[ -x $build/tests/$t || -x $build/bench/$t ]] || missing+=("$t"); done
  wl_record build "$(wl_status_of $rc)" "$stage_seconds" \
    "$(( $# - ${#missing[@]} ))/$# targets built${missing[*]:+ (missing: ${missing[*]})}$( ((rc)) && grep -m3 -E 'error' "$stage_log" | tr '\n' ' ')"
  [[ -n $out ]] && tail -c 100000 "$stage_log" >"$out/build.log" 2>/dev/null
}

# ---- the GPU tests ----------------------------------------------------------------------------------
# The smoke set (bench/gpu/smoke_tests.txt): "family binary test" lines.
wl_smoke_tests() { grep -v '^\s*#' "$wl_here/smoke_tests.txt" | awk 'NF >= 3 {print $1, $2, $3}'; }

# A ctest regular expression matching exactly the given names (gtest_discover_tests names a
# parameterised test "Suite/Test.Case/Param  # GetParam() = ...": the comment may follow).
wl_exact_regex() {
  local n r=
  for n in "$@"; do r+="${r:+|}$(sed 's/[][\.*^$+?(){}|]/\\&/g' <<<"$n")"; done
  echo "^($r)(  # .*)?\$"
}

# The GPU tests this build registered (ctest -L gpu), one GoogleTest name a line.
wl_gpu_tests() {
  ctest --test-dir "$build" -N -L gpu 2>/dev/null | sed -n 's/^ *Test *#[0-9]*: //p' | sed 's/  # GetParam().*//'
}

wl_device_query() {
  wl_stage device 60 -- bash "$wl_here/device_query.sh" "$work/device.env"
  local rc=$?
  local gpu
  gpu=$(sed -n 's/^gpu=//p' "$work/device.env" 2>/dev/null)
  has_gpu=0
  [[ -n $gpu && $gpu != unknown ]] && has_gpu=1
  wl_record device "$(wl_status_of $rc)" "$stage_seconds" \
    "$(sed -n 's/^\(gpu\|gpu_note\|driver\|cuda\|torch\|compute_sanitizer\|ncu\)=/\1 /p' "$work/device.env" | paste -sd ';' -)"
}
