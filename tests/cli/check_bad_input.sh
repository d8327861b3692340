#!/usr/bin/env bash
# Bad input to `sd_mpi generate` (and friends): each case must end with ONE line naming what is
# wrong, a non-zero exit code, and no output file that looks complete.
#   check_bad_input.sh path/to/sd_mpi
set -uo pipefail
sd=$1
features=$("$sd" --version | sed -n 's/^features://p')
case "$features" in *png*) ;; *) echo "this build has no PNG output: skipped"; exit 77 ;; esac
case "$features" in *hdf5*) ;; *) echo "this build has no HDF5 archive: skipped"; exit 77 ;; esac
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
printf 'a cat\n' >"$tmp/ok.txt"
printf '' >"$tmp/empty.txt"
printf 'a cat\nan \xff owl\n' >"$tmp/bad_utf8.txt"
printf '{"prompt": "a"}\n{"prompt": "b", "steps": }\n' >"$tmp/bad.jsonl"
"$sd" make-model --preset tiny "$tmp/model" >/dev/null 2>&1 && rm -rf "$tmp/model/vae"
"$sd" make-model --preset tiny "$tmp/model2" >/dev/null 2>&1 && rm -f "$tmp/model2/unet/diffusion_pytorch_model.safetensors"

# case NAME EXPECTED-EXIT EXPECTED-SUBSTRING ARGS...
case_() {
  local name=$1 want_rc=$2 want=$3; shift 3
  rm -rf "$tmp/out"
  "$sd" "$@" >"$tmp/stdout" 2>"$tmp/stderr"; local rc=$?
  local lines; lines=$(grep -c . "$tmp/stderr")
  local ok=1
  [ "$rc" -eq "$want_rc" ] || ok=0
  grep -qF -- "$want" "$tmp/stderr" || ok=0
  [ "$lines" -eq 1 ] || ok=0
  if [ -e "$tmp/out" ] && [ -n "$(ls -A "$tmp/out" 2>/dev/null)" ]; then ok=0; echo "  left files: $(ls "$tmp/out")"; fi
  if [ $ok = 1 ]; then echo "ok: $name"; else
    echo "FAIL: $name (rc=$rc want $want_rc, $lines stderr lines, want \"$want\")"; sed 's/^/  | /' "$tmp/stderr"; fail=1; fi
}
base=(generate --model tiny --steps 2 --out-dir "$tmp/out")
case_ "unknown sampler" 2 'unknown sampler "heun2"' "${base[@]}" --prompt cat --sampler heun2
case_ "width not a multiple of 8" 2 'width 100 is not a positive multiple of 8' "${base[@]}" --prompt cat --width 100
case_ "0 steps" 2 '--steps' "${base[@]}" --prompt cat --steps 0
case_ "empty prompt file" 2 'holds no prompts' "${base[@]}" --prompts "$tmp/empty.txt"
case_ "missing prompt file" 2 'cannot open prompt file' "${base[@]}" --prompts "$tmp/nope.txt"
case_ "invalid UTF-8 in a prompt file" 2 'bad_utf8.txt:2: invalid UTF-8 at byte 4' "${base[@]}" --prompts "$tmp/bad_utf8.txt"
case_ "invalid UTF-8 in --prompt" 2 'invalid UTF-8' "${base[@]}" --prompt $'caf\xc3'
case_ "malformed JSONL line" 2 'bad.jsonl:2: malformed JSON' "${base[@]}" --prompts "$tmp/bad.jsonl"
# (paths under a regular file: unwritable even for root, who ignores permission bits)
case_ "unwritable output folder" 2 'cannot create output folder' generate --model tiny --steps 2 --prompt cat --out-dir "$tmp/ok.txt/x"
case_ "unwritable archive" 1 "$tmp/ok.txt/a.h5" generate --model tiny --steps 2 --prompt cat --archive "$tmp/ok.txt/a.h5"
nomodel=(generate --steps 2 --out-dir "$tmp/out" --prompt cat)
case_ "model folder without a vae" 2 'vae' "${nomodel[@]}" --model "$tmp/model"
case_ "model folder without unet weights" 2 'unet' "${nomodel[@]}" --model "$tmp/model2"
case_ "model that does not exist" 2 'does not exist' "${nomodel[@]}" --model "$tmp/nowhere"
case_ "nothing to write" 2 'nothing to write' generate --model tiny --prompt cat
case_ "no prompt" 2 'give --prompt TEXT or --prompts FILE' "${base[@]}"
case_ "shard 3/2" 2 '--shard 3/2' "${base[@]}" --prompt cat --shard 3/2
case_ "unknown option" 2 'sd_mpi generate --help' "${base[@]}" --prompt cat --stepz 3
case_ "cpu with fp16" 2 'fp32 only' "${base[@]}" --prompt cat --device cpu --precision fp16
case_ "unknown subcommand" 2 "unknown subcommand 'frobnicate'" frobnicate
exit $fail
