#!/usr/bin/env bash
# Attention's part of bench/gpu/window.sh: runs the attention GPU tests, our benchmark and torch
# SDPA's on the same GPU, then prints ours against torch's fastest backend per shape.
#
#   bench/gpu/attention_check.sh BUILD_DIR OUT_DIR
#   ATTENTION_SKIP_TESTS=1   leave the tests out (window.sh: its ctest stage already ran them)
#
# Builds nothing: BUILD_DIR must hold tests/attention_test and bench/attention_bench (a CUDA
# build). Writes to OUT_DIR: attention_test.{json,log}, attention_ours.json, attention_bench.log,
# attention_torch.{json,log}, attention_compare.txt. Prints the test summary and the comparison
# table last. Exit status: 0 when every step ran and every test passed; 1 otherwise (the table is
# still printed when both benchmarks produced their files). Takes about 1-2 minutes on an H100.
set -u

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR OUT_DIR" >&2
  exit 2
fi
build=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
mkdir -p "$out" || exit 1
status=0

test_bin=$build/tests/attention_test
bench_bin=$build/bench/attention_bench
for bin in "$test_bin" "$bench_bin"; do
  if [ ! -x "$bin" ]; then
    echo "attention_check: $bin is missing (build the attention_test and attention_bench targets)" >&2
    exit 1
  fi
done

if [ -z "${ATTENTION_SKIP_TESTS:-}" ]; then
  echo "== attention: GPU tests"
  if ! timeout 300 "$test_bin" --gtest_output=json:"$out/attention_test.json" >"$out/attention_test.log" 2>&1; then
    status=1
  fi
  grep -E '^\[  (PASSED|FAILED|SKIPPED) *\]|tests? from .* ran' "$out/attention_test.log" | grep -v '^\[  SKIPPED \] Attention' | tail -n 30
  grep -m1 'skipped, no usable CUDA GPU' "$out/attention_test.log"
  # The Hopper kernel (sm_90a) against the CPU and the Flash kernel, and the picker with the switch on.
  hopper_bin=$build/tests/attention_hopper_test
  if [ -x "$hopper_bin" ]; then
    if ! SDMPI_CUDA_ATTENTION=hopper timeout 300 "$hopper_bin" \
        --gtest_output=json:"$out/attention_hopper_test.json" >"$out/attention_hopper_test.log" 2>&1; then
      status=1
    fi
    grep -E '^\[  (PASSED|FAILED|SKIPPED|     OK) *\]|skipped' "$out/attention_hopper_test.log" | tail -n 10
  fi
fi

echo "== attention: our kernels"
if ! timeout 240 "$bench_bin" "$out/attention_ours.json" >"$out/attention_bench.log" 2>&1; then
  echo "attention_check: attention_bench failed, see $out/attention_bench.log" >&2
  tail -n 5 "$out/attention_bench.log" >&2
  status=1
fi

echo "== attention: torch SDPA (flash, cuDNN, efficient, math)"
if [ -f "$out/attention_ours.json" ]; then
  if ! PYTHONUNBUFFERED=1 timeout 300 "$python" "$here/attention_torch.py" "$out/attention_torch.json" \
      --ours "$out/attention_ours.json" >"$out/attention_torch.log" 2>&1; then
    echo "attention_check: attention_torch.py failed, see $out/attention_torch.log" >&2
    tail -n 5 "$out/attention_torch.log" >&2
    status=1
  fi
fi

# Our own summary (UNet step time, fastest variant per shape), then the comparison table last.
sed -n '/^SD 1.5 UNet step/,/^$/p' "$out/attention_bench.log"
sed -n '/^Hopper vs/,/^$/p' "$out/attention_bench.log"
if [ -f "$out/attention_ours.json" ] && [ -f "$out/attention_torch.json" ]; then
  echo "== attention: ours vs torch's fastest SDPA backend (same GPU, same run)"
  "$python" "$here/attention_torch.py" --compare "$out/attention_ours.json" "$out/attention_torch.json" \
    | tee "$out/attention_compare.txt"
else
  status=1
fi
exit $status
