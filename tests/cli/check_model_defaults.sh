#!/usr/bin/env bash
# Steps, guidance and sampler left off the command line take the model's defaults: SD's 50 steps
# at guidance 7.5 with the scheduler the model names, except the demo model, drawn with its own
# (src/pipeline/demo_model.h: kDemoSteps, kDemoGuidance, kDemoSampler); whatever the command line
# gives wins. Read back from each PNG's A1111 parameters chunk (tEXt, uncompressed).
#   check_model_defaults.sh path/to/sd_mpi
set -euo pipefail
SD=${1:?usage: check_model_defaults.sh SD_MPI}
here=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
constant() { sed -n "s/^inline constexpr [a-z* ]* $1 = \"\{0,1\}\([^\";f]*\)\"\{0,1\}f\{0,1\};.*/\1/p" "$here/src/pipeline/demo_model.h"; }
steps=$(constant kDemoSteps) guidance=$(constant kDemoGuidance) sampler=$(constant kDemoSampler)
[ -n "$steps" ] && [ -n "$guidance" ] && [ -n "$sampler" ] || fail "cannot read the demo defaults from demo_model.h"
# The PNG's names for our samplers (A1111's), for the ones this test uses.
declare -A a1111=([pndm]="PLMS" [ddim]="DDIM" [euler]="Euler" [euler_a]="Euler a" [dpmpp_2m]="DPM++ 2M")
params() { grep -a -o "Steps: [0-9]*, Sampler: [^,]*, Schedule type: [^,]*, CFG scale: [0-9.]*" "$1/000000.png"; }
run() {
  local out=$tmp/$1; shift
  "$SD" generate --prompt "two small red circles on the left on a blue background" --seed 3 --width 64 --height 64 \
    --out-dir "$out" "$@" 2>"$out.log" || { cat "$out.log" >&2; fail "sd_mpi $*"; }
  params "$out"
}
got=$(run demo --model demo)
want="Steps: $steps, Sampler: ${a1111[$sampler]}, Schedule type: Automatic, CFG scale: $guidance"
[ "$got" = "$want" ] || fail "--model demo without flags: '$got', expected '$want'"
echo "ok: demo defaults: $got"
got=$(run demo_set --model demo --steps 3 --guidance 4 --sampler ddim)
[ "$got" = "Steps: 3, Sampler: DDIM, Schedule type: Automatic, CFG scale: 4.0" ] || fail "--model demo with flags: '$got'"
echo "ok: demo with flags: $got"
got=$(run tiny --model tiny)
[ "$got" = "Steps: 50, Sampler: PLMS, Schedule type: Automatic, CFG scale: 7.5" ] || fail "--model tiny without flags: '$got'"
echo "ok: tiny defaults: $got"
