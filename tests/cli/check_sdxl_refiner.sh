#!/usr/bin/env bash
# The SDXL refiner through the command line, on make-model's tiny-sdxl and tiny-sdxl-refiner
# folders: inspect names the refiner; --refiner/--refiner-start run the two stages (recorded in the
# PNG parameters and the archive, and different from the base alone); a refiner alone runs img2img
# and its aesthetic score matters; misuse is one line, exit 2, no output; the memory check counts
# both models. (Exactness against diffusers: tests/unit/sdxl_img2img_golden_test.cpp.)
set -euo pipefail
SD=${1:?usage: check_sdxl_refiner.sh SD_MPI}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$SD" make-model --preset tiny-sdxl --seed 3 "$tmp/base" >/dev/null 2>&1 || fail "make-model tiny-sdxl"
"$SD" make-model --preset tiny-sdxl-refiner --seed 4 "$tmp/ref" >/dev/null 2>&1 || fail "make-model tiny-sdxl-refiner"
[[ ! -e "$tmp/ref/text_encoder" && -f "$tmp/ref/text_encoder_2/model.safetensors" ]] || fail "refiner folder layout"
grep -q '"requires_aesthetics_score": true' "$tmp/ref/model_index.json" || fail "refiner model_index.json"
out=$("$SD" inspect "$tmp/ref")
grep -q '^family: SDXL refiner$' <<<"$out" || fail "inspect: no 'family: SDXL refiner' in: $out"
grep -q 'pooled 40 + 5 x 8 micro-conditioning + aesthetic score' <<<"$out" || fail "inspect: the refiner's time ids"

common=(--prompt "a red fox" --seed 11 --steps 5 --guidance 5)
"$SD" generate --model "$tmp/base" "${common[@]}" --out-dir "$tmp/alone" >/dev/null 2>&1 || fail "base alone"
"$SD" generate --model "$tmp/base" --refiner "$tmp/ref" --refiner-start 0.6 "${common[@]}" --out-dir "$tmp/two" \
  --archive "$tmp/two.h5" >/dev/null 2>&1 || fail "two stages"
grep -a -q 'Refiner: ref \[[0-9a-f]\{10\}\], Refiner switch at: 0.6, Aesthetic score: 6.0, Negative aesthetic score: 2.5' \
  "$tmp/two/000000.png" || fail "PNG parameters lack the refiner"
cmp -s "$tmp/alone/000000.png" "$tmp/two/000000.png" && fail "the refiner stage changed nothing"
if command -v h5dump >/dev/null; then
  h5dump -d refiner_start "$tmp/two.h5" | grep -q '(0): 0.6' || fail "archive /refiner_start is not 0.6"
  h5dump -a config_json "$tmp/two.h5" | grep -q 'refiner_weights_sha256' || fail "archive config_json lacks the refiner"
fi
# The same job again with another hand-off point is another job: --resume refuses it.
set +e
msg=$("$SD" generate --model "$tmp/base" --refiner "$tmp/ref" --refiner-start 0.7 "${common[@]}" --archive "$tmp/two.h5" \
  --resume 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc -eq 2 && $msg == *"belongs to another job"* ]] || fail "--resume with another --refiner-start: exit $rc, '$msg'"

# A refiner alone: img2img only, and the aesthetic score is part of its conditioning.
"$SD" generate --model "$tmp/ref" "${common[@]}" --init-image "$tmp/alone/000000.png" --strength 0.5 \
  --out-dir "$tmp/r6" >/dev/null 2>&1 || fail "refiner img2img"
"$SD" generate --model "$tmp/ref" "${common[@]}" --init-image "$tmp/alone/000000.png" --strength 0.5 \
  --aesthetic-score 9 --out-dir "$tmp/r9" >/dev/null 2>&1 || fail "refiner img2img, aesthetic score 9"
grep -a -q 'Aesthetic score: 9.0' "$tmp/r9/000000.png" || fail "PNG parameters lack the aesthetic score"
cmp -s "$tmp/r6/000000.png" "$tmp/r9/000000.png" && fail "the aesthetic score changed nothing"
# The same as JSONL keys: the same image.
printf '{"prompt": "a red fox", "seed": 11, "init_image": "%s", "strength": 0.5, "aesthetic_score": 9}\n' \
  "$tmp/alone/000000.png" > "$tmp/p.jsonl"
"$SD" generate --model "$tmp/ref" --steps 5 --guidance 5 --prompts "$tmp/p.jsonl" --out-dir "$tmp/rj" >/dev/null 2>&1 \
  || fail "refiner img2img from JSONL"
cmp -s "$tmp/r9/000000.png" "$tmp/rj/000000.png" || fail "JSONL aesthetic_score and --aesthetic-score differ"

"$SD" make-model --preset tiny --seed 1 "$tmp/sd1" >/dev/null 2>&1 || fail "make-model tiny"
check_refused() {  # expected message part, then the arguments
  local want=$1; shift
  set +e
  msg=$("$SD" generate "$@" --out-dir "$tmp/bad" 2>&1 >/dev/null)
  rc=$?
  set -e
  [[ $rc -eq 2 ]] || fail "$*: exit $rc, expected 2 ($msg)"
  [[ $(wc -l <<<"$msg") -eq 1 && $msg == *"$want"* ]] || fail "$*: message '$msg'"
  [[ ! -e "$tmp/bad" ]] || fail "$* left $tmp/bad behind"
}
check_refused "is an SDXL refiner, which runs img2img only" --model "$tmp/ref" --prompt x
check_refused "--refiner-start 1.5 is outside (0, 1)" --model "$tmp/base" --refiner "$tmp/ref" --refiner-start 1.5 --prompt x
check_refused "the refiner stage follows an SDXL base model" --model "$tmp/sd1" --refiner "$tmp/ref" --prompt x
check_refused "is SD 1.x, not an SDXL refiner" --model "$tmp/base" --refiner "$tmp/sd1" --prompt x
# The memory check counts both models' weights (both stay loaded for the job).
huge=(--prompt x --width 16384 --height 16384 --device cpu)
check_refused ", with the refiner needs about " --model "$tmp/base" --refiner "$tmp/ref" "${huge[@]}"
with=$(grep -o 'weights [0-9.]* GiB' <<<"$msg")
check_refused "needs about " --model "$tmp/base" "${huge[@]}"
without=$(grep -o 'weights [0-9.]* GiB' <<<"$msg")
[[ -n "$with" && -n "$without" && "$with" != "$without" ]] || fail "the refiner's weights are not counted ($with vs $without)"
echo "check_sdxl_refiner: all passed"
