#!/usr/bin/env bash
# Bad input to `sd_mpi generate` (and friends): each case must end with ONE line of the form
# "sd_mpi: error: <what, naming the file/line/option and value at fault>", the expected exit code
# (README "Exit codes and errors"), and no output left behind: nothing in --out-dir, no archive,
# and no default output folder (sd_mpi-out/ in the working directory, which is $tmp/cwd here).
# Last, the one good case this file owns: with no --out-dir/--archive, PNG files go to
# ./sd_mpi-out/ and the first line says so.
#   check_bad_input.sh path/to/sd_mpi
set -uo pipefail
sd=$1
features=$("$sd" --version | sed -n 's/^features://p')
case "$features" in *png*) ;; *) echo "this build has no PNG output: skipped"; exit 77 ;; esac
case "$features" in *hdf5*) ;; *) echo "this build has no HDF5 archive: skipped"; exit 77 ;; esac
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
sd=$(cd "$(dirname "$sd")" && pwd)/$(basename "$sd")
img=$(cd "$(dirname "$0")/../data/golden/img2img" && pwd)  # img2img init images (made by tools/golden/)
mkdir "$tmp/cwd" && cd "$tmp/cwd" || exit 1
fail=0
cases=0
printf 'a cat\n' >"$tmp/ok.txt"
printf '' >"$tmp/empty.txt"
printf 'a cat\nan \xff owl\n' >"$tmp/bad_utf8.txt"
printf '{"prompt": "a"}\n{"prompt": "b", "steps": }\n' >"$tmp/bad.jsonl"
"$sd" make-model --preset tiny "$tmp/model" >/dev/null 2>&1 && rm -rf "$tmp/model/vae"
"$sd" make-model --preset tiny "$tmp/model2" >/dev/null 2>&1 && rm -f "$tmp/model2/unet/diffusion_pytorch_model.safetensors"

# case NAME EXPECTED-EXIT EXPECTED-SUBSTRING ARGS...
case_() {
  local name=$1 want_rc=$2 want=$3; shift 3
  cases=$((cases + 1))
  rm -rf "$tmp/out" "$tmp/a.h5" "$tmp/cwd/sd_mpi-out"
  "$sd" "$@" >"$tmp/stdout" 2>"$tmp/stderr"; local rc=$?
  local lines; lines=$(grep -c . "$tmp/stderr")
  local ok=1
  [ "$rc" -eq "$want_rc" ] || ok=0
  grep -qF -- "$want" "$tmp/stderr" || ok=0
  [ "$lines" -eq 1 ] || ok=0
  grep -q '^sd_mpi: error: ' "$tmp/stderr" || ok=0
  if [ -e "$tmp/out" ] && [ -n "$(ls -A "$tmp/out" 2>/dev/null)" ]; then ok=0; echo "  left files: $(ls "$tmp/out")"; fi
  if [ -e "$tmp/a.h5" ]; then ok=0; echo "  left an archive"; fi
  if [ -n "$(ls -A "$tmp/cwd" 2>/dev/null)" ]; then ok=0; echo "  left in the working directory: $(ls -A "$tmp/cwd")"; fi
  if [ $ok = 1 ]; then echo "ok: $name: $(cat "$tmp/stderr")"; else
    echo "FAIL: $name (rc=$rc want $want_rc, $lines stderr lines, want \"$want\")"; sed 's/^/  | /' "$tmp/stderr"; fail=1; fi
}
base=(generate --model tiny --steps 2 --out-dir "$tmp/out")
# The CPU backend's environment switches (README "CPU kernels"): an unknown value is bad input.
SDMPI_CPU_ISA=avx9 case_ "unknown SDMPI_CPU_ISA" 2 "SDMPI_CPU_ISA=avx9: expected 'avx512', 'avx2' or 'portable'" "${base[@]}" --prompt cat
SDMPI_CPU_GEMM=mkl case_ "unknown SDMPI_CPU_GEMM" 2 "SDMPI_CPU_GEMM=mkl: expected 'builtin' or 'openblas'" "${base[@]}" --prompt cat
SDMPI_CPU_CONV=fft case_ "unknown SDMPI_CPU_CONV" 2 "SDMPI_CPU_CONV=fft: expected 'auto', 'winograd' or 'direct'" "${base[@]}" --prompt cat
SDMPI_CPU_WINOGRAD_CACHE_MB=lots case_ "SDMPI_CPU_WINOGRAD_CACHE_MB not a number" 2 'SDMPI_CPU_WINOGRAD_CACHE_MB=lots: expected a number of MiB' "${base[@]}" --prompt cat
case_ "unknown sampler" 2 'unknown sampler "heun2"' "${base[@]}" --prompt cat --sampler heun2
case_ "width not a multiple of 8" 2 'width 100 is not a positive multiple of 8' "${base[@]}" --prompt cat --width 100
case_ "0 steps" 2 '--steps' "${base[@]}" --prompt cat --steps 0
case_ "guidance not a number" 2 '--guidance: Value nan is not a number' "${base[@]}" --prompt cat --guidance nan
case_ "empty prompt file" 2 'holds no prompts' "${base[@]}" --prompts "$tmp/empty.txt"
case_ "missing prompt file" 2 'cannot open prompt file' "${base[@]}" --prompts "$tmp/nope.txt"
case_ "invalid UTF-8 in a prompt file" 2 'bad_utf8.txt:2: invalid UTF-8 at byte 4' "${base[@]}" --prompts "$tmp/bad_utf8.txt"
case_ "invalid UTF-8 in --prompt" 2 'invalid UTF-8' "${base[@]}" --prompt $'caf\xc3'
case_ "malformed JSONL line" 2 'bad.jsonl:2: malformed JSON' "${base[@]}" --prompts "$tmp/bad.jsonl"
# (paths under a regular file: unwritable even for root, who ignores permission bits)
case_ "unwritable output folder" 2 'cannot create output folder' generate --model tiny --steps 2 --prompt cat --out-dir "$tmp/ok.txt/x"
case_ "unwritable archive" 1 "$tmp/ok.txt/a.h5" generate --model tiny --steps 2 --prompt cat --archive "$tmp/ok.txt/a.h5"
lora=$(cd "$(dirname "$0")/../data/golden/lora" && pwd)  # LoRAs of the golden's tiny pipelines (tools/golden/)
printf '{"prompt": "a", "lora": "x.safetensors"}\n' >"$tmp/lora_str.jsonl"
printf '{"prompt": "a", "lora": [{"path": "x.safetensors", "weight": 1}]}\n' >"$tmp/lora_key.jsonl"
case_ "LoRA that does not fit the model" 2 "LoRA $lora/two_level_peft.safetensors: " "${base[@]}" --prompt cat --lora "$lora/two_level_peft.safetensors:0.5"
case_ "missing LoRA file" 2 "LoRA file $tmp/nope.safetensors does not exist" "${base[@]}" --prompt cat --lora "$tmp/nope.safetensors"
case_ "LoRA that is not safetensors" 2 "LoRA $tmp/ok.txt: not a safetensors file" "${base[@]}" --prompt cat --lora "$tmp/ok.txt"
case_ "<lora:> without --lora-dir" 2 "the prompt's <lora:style> needs --lora-dir" "${base[@]}" --prompt "cat <lora:style:0.5>"
case_ "<lora:> scale not a number" 2 "<lora:style:x>: scale 'x' is not a number" "${base[@]}" --prompt "cat <lora:style:x>" --lora-dir "$tmp"
case_ "JSONL lora not a list" 2 'lora_str.jsonl:1: "lora" must be a list' "${base[@]}" --prompts "$tmp/lora_str.jsonl"
case_ "JSONL lora entry with an unknown key" 2 'unknown key "weight" in a "lora" entry' "${base[@]}" --prompts "$tmp/lora_key.jsonl"
# A one-tensor safetensors file (F32 [1], value 0) whose key is $2: other adapter kinds are refused by name.
one_tensor() {
  local header="{\"$2\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"
  { printf "$(printf '\\x%02x' "${#header}")\x00\x00\x00\x00\x00\x00\x00"; printf '%s' "$header"; printf '\x00\x00\x00\x00'; } >"$1"
}
one_tensor "$tmp/loha.safetensors" lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a
one_tensor "$tmp/dora.safetensors" unet.down_blocks.0.attentions.0.proj_in.lora_magnitude_vector
case_ "LoHa (LyCORIS) file as a LoRA" 2 "LoRA $tmp/loha.safetensors: key lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a is LoHa (LyCORIS), not a plain LoRA" "${base[@]}" --prompt cat --lora "$tmp/loha.safetensors"
case_ "DoRA (PEFT) file as a LoRA" 2 "is DoRA (PEFT), not a plain LoRA" "${base[@]}" --prompt cat --lora "$tmp/dora.safetensors"
case_ "SDXL LoRA on an SD 1.x model" 2 "the model has no text_encoder_2" "${base[@]}" --prompt cat --lora "$lora/sdxl_kohya_ldm.safetensors"
nomodel=(generate --steps 2 --out-dir "$tmp/out" --prompt cat)
case_ "model folder without a vae" 2 'vae' "${nomodel[@]}" --model "$tmp/model"
case_ "model folder without unet weights" 2 'unet' "${nomodel[@]}" --model "$tmp/model2"
case_ "model that does not exist" 2 'does not exist' "${nomodel[@]}" --model "$tmp/nowhere"
case_ "no prompt" 2 'give --prompt TEXT or --prompts FILE' "${base[@]}"
case_ "shard 3/2" 2 '--shard 3/2' "${base[@]}" --prompt cat --shard 3/2
case_ "unknown option" 2 'sd_mpi generate --help' "${base[@]}" --prompt cat --stepz 3
case_ "cpu with fp16" 2 'fp32 only' "${base[@]}" --prompt cat --device cpu --precision fp16
case_ "unknown subcommand" 2 "unknown subcommand 'frobnicate'" frobnicate

# ---- sizes and memory: a clear line before any work, never bad_alloc/MPI_ABORT (issue 15) ----
case_ "100000x100000" 2 '--width 100000: at most 16384 pixels per side' "${base[@]}" --prompt cat --width 100000 --height 100000
case_ "height past the limit" 2 '--height 16392: at most 16384' "${base[@]}" --prompt cat --height 16392
case_ "negative width" 2 'width -8 is not a positive multiple of 8' "${base[@]}" --prompt cat --width -8
case_ "16384x16384: more memory than the node has" 2 \
  '16384x16384 images, batch 1 (x2 for guidance), F32 on the CPU needs about ' "${base[@]}" --prompt cat --width 16384 --height 16384 --device cpu
case_ "a big batch of big images" 2 '8192x8192 images, batch 64 (x2 for guidance)' \
  "${base[@]}" --prompt cat -n 64 --batch-size 64 --width 8192 --height 8192 --device cpu
case_ "memory line names the limit" 2 'per rank (weights ' "${base[@]}" --prompt cat --width 16384 --height 16384 --device cpu
printf '{"prompt": "a", "width": 16000, "height": 16000}\n' >"$tmp/huge.jsonl"
case_ "a JSONL line asks for too much memory" 2 '16000x16000 images' "${base[@]}" --prompts "$tmp/huge.jsonl" --device cpu
printf '{"prompt": "a", "width": 100}\n' >"$tmp/w100.jsonl"
case_ "a JSONL width not a multiple of 8" 2 'w100.jsonl:1: width 100 is not a positive multiple of 8' "${base[@]}" --prompts "$tmp/w100.jsonl"
printf '{"prompt": "a", "strenght": 1}\n' >"$tmp/key.jsonl"
case_ "a JSONL line with an unknown key" 2 'key.jsonl:1: unknown key "strenght"' "${base[@]}" --prompts "$tmp/key.jsonl"
printf '{"prompt": "a"}\n{"prompt": "b", "prompt_weighting": "A1111"}\n' >"$tmp/weighting.jsonl"
case_ "a JSONL prompt weighting mode that does not exist" 2 'weighting.jsonl:2: unknown prompt weighting "A1111" (known: none, a1111)' \
  "${base[@]}" --prompts "$tmp/weighting.jsonl"
printf '{"prompt": "a (cat:1.2.3)", "prompt_weighting": "a1111"}\n' >"$tmp/weight.jsonl"
case_ "a JSONL A1111 weight that is not a number" 2 'weight.jsonl:1: prompt weighting: "1.2.3" in "a (cat:1.2.3)" is not a number' \
  "${base[@]}" --prompts "$tmp/weight.jsonl"
case_ "--prompt-weighting compel" 2 '--prompt-weighting' "${base[@]}" --prompt cat --prompt-weighting compel

# ---- options out of range ----
case_ "--shard 0/0" 2 '--shard 0/0' "${base[@]}" --prompt cat --shard 0/0
case_ "--shard abc" 2 '--shard abc: expected i/K' "${base[@]}" --prompt cat --shard abc
case_ "--shard -1/2" 2 '--shard -1/2' "${base[@]}" --prompt cat --shard -1/2
case_ "--seed -2" 2 '--seed' "${base[@]}" --prompt cat --seed -2
case_ "--seed abc" 2 '--seed' "${base[@]}" --prompt cat --seed abc
case_ "--batch-size 0" 2 '--batch-size' "${base[@]}" --prompt cat --batch-size 0
case_ "--batch-size 5000" 2 '--batch-size' "${base[@]}" --prompt cat --batch-size 5000
case_ "--steps 1001" 2 '--steps' "${base[@]}" --prompt cat --steps 1001
case_ "-n 0" 2 '--images-per-prompt' "${base[@]}" --prompt cat -n 0
case_ "--clip-skip 12" 2 '--clip-skip' "${base[@]}" --prompt cat --clip-skip 12
case_ "--device gpu" 2 '--device' "${base[@]}" --prompt cat --device gpu
case_ "--precision fp64" 2 '--precision' "${base[@]}" --prompt cat --precision fp64
case_ "--progress fancy" 2 '--progress' "${base[@]}" --prompt cat --progress fancy
case_ "--distribution random" 2 '--distribution' "${base[@]}" --prompt cat --distribution random
case_ "--schedule exponential" 2 'exponential' "${base[@]}" --prompt cat --sampler euler --schedule exponential
case_ "--resume with --overwrite" 2 '--resume and --overwrite contradict each other' "${base[@]}" --prompt cat --resume --overwrite
case_ "no --model" 2 '--model is required' generate --prompt cat --out-dir "$tmp/out"
case_ "--prompt with --prompts" 2 'excludes' "${base[@]}" --prompt cat --prompts "$tmp/ok.txt"

# ---- prompt files that cannot be read ----
case_ "prompt file under a regular file" 2 "cannot open prompt file $tmp/ok.txt/p.txt" "${base[@]}" --prompts "$tmp/ok.txt/p.txt"
mkdir "$tmp/dir.txt"
case_ "a folder as the prompt file" 2 "prompt file $tmp/dir.txt is a folder, not a file" "${base[@]}" --prompts "$tmp/dir.txt"

# ---- img2img init images and strength (issue 18): refused before any work, naming file and value ----
head -c 300 "$img/init_four_level_64x64_0.png" >"$tmp/truncated.png"
printf '\xff\xd8\xff\xe0 this is no JPEG data' >"$tmp/corrupt.jpg"
python3 -c 'import struct,sys,zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
w, h = 20, 12
raw = b"".join(b"\0" + bytes(3 * w) for _ in range(h))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                             + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))' "$tmp/odd_20x12.png"
printf '{"prompt": "a", "init_image": "missing.png"}\n' >"$tmp/img.jsonl"
printf '{"prompt": "a", "init_image": "%s", "strength": -0.5}\n' "$img/init_four_level_64x64_0.png" >"$tmp/s.jsonl"
printf '{"prompt": "a", "init_image": "%s", "width": 64, "height": 64}\n' "$img/init_four_level_64x48_0.png" >"$tmp/size.jsonl"
case_ "missing init image" 2 "init image $tmp/nope.png cannot be opened" "${base[@]}" --prompt cat --init-image "$tmp/nope.png"
case_ "init image that is text" 2 "$tmp/ok.txt: not a PNG or JPEG image" "${base[@]}" --prompt cat --init-image "$tmp/ok.txt"
case_ "truncated PNG init image" 2 "$tmp/truncated.png: not a readable PNG" "${base[@]}" --prompt cat --init-image "$tmp/truncated.png"
case_ "corrupt JPEG init image" 2 "$tmp/corrupt.jpg: not a readable JPEG" "${base[@]}" --prompt cat --init-image "$tmp/corrupt.jpg"
case_ "init image sides not multiples of 8" 2 "odd_20x12.png is 20x12; img2img needs sides that are multiples of 8" \
  "${base[@]}" --prompt cat --init-image "$tmp/odd_20x12.png"
case_ "init image of another size than asked" 2 'init_four_level_64x48_0.png is 64x48 but the item asks for 64x64' \
  "${base[@]}" --prompt cat --init-image "$img/init_four_level_64x48_0.png" --width 64 --height 64
case_ "JSONL init image of another size" 2 "size.jsonl:1: init image $img/init_four_level_64x48_0.png is 64x48" \
  "${base[@]}" --prompts "$tmp/size.jsonl"
case_ "JSONL init image missing (relative to the file)" 2 "img.jsonl:1: init image $tmp/missing.png cannot be opened" \
  "${base[@]}" --prompts "$tmp/img.jsonl"
case_ "--strength 1.5" 2 '--strength 1.5 is outside (0, 1]' "${base[@]}" --prompt cat --init-image "$img/init_four_level_64x64_0.png" --strength 1.5
case_ "--strength 0" 2 '--strength 0 is outside (0, 1]' "${base[@]}" --prompt cat --init-image "$img/init_four_level_64x64_0.png" --strength 0
case_ "JSONL strength -0.5" 2 's.jsonl:1: strength -0.5 is outside (0, 1]' "${base[@]}" --prompts "$tmp/s.jsonl"
case_ "strength too small for the steps" 2 'strength 0.1 with 2 steps leaves no denoising step' \
  "${base[@]}" --prompt cat --init-image "$img/init_four_level_64x64_0.png" --strength 0.1

# ---- model folders with parts missing or absurd configs (copies of make-model's tiny) ----
tiny_copy() { rm -rf "$tmp/$1"; cp -r "$tmp/good" "$tmp/$1"; }
"$sd" make-model --preset tiny "$tmp/good" >/dev/null 2>&1
# set_key FOLDER/FILE KEY JSON-VALUE: replaces the key's value (one line or a list) in a config.
set_key() {
  python3 -c 'import json,sys; p,k,v=sys.argv[1:]; j=json.load(open(p)); j[k]=json.loads(v); json.dump(j,open(p,"w"),indent=2)' "$@"
}
tiny_copy m1 && rm -rf "$tmp/m1/text_encoder"
case_ "model folder without a text encoder" 2 'text_encoder' "${nomodel[@]}" --model "$tmp/m1"
tiny_copy m2 && rm -f "$tmp/m2/unet/config.json"
case_ "model folder without unet/config.json" 2 'unet/config.json' "${nomodel[@]}" --model "$tmp/m2"
tiny_copy m3 && set_key "$tmp/m3/unet/config.json" block_out_channels '[32, 64, 64, 1000000]'
case_ "unet with a million channels" 2 'unet/config.json: "block_out_channels" = [32,64,64,1000000]: values must lie in 1..16384' \
  "${nomodel[@]}" --model "$tmp/m3"
tiny_copy m4 && set_key "$tmp/m4/unet/config.json" layers_per_block 1000
case_ "unet with 1000 layers per block" 2 'unet/config.json: "layers_per_block" = 1000: values must lie in 1..64' \
  "${nomodel[@]}" --model "$tmp/m4"
tiny_copy m5 && set_key "$tmp/m5/text_encoder/config.json" vocab_size 2000000000
case_ "text encoder with 2e9 tokens" 2 'text_encoder/config.json: "vocab_size" = 2000000000: values must lie in 1..1000000' \
  "${nomodel[@]}" --model "$tmp/m5"
tiny_copy m6 && set_key "$tmp/m6/text_encoder/config.json" num_hidden_layers 100000
case_ "text encoder with 100000 layers" 2 '"num_hidden_layers" = 100000: values must lie in 1..64' "${nomodel[@]}" --model "$tmp/m6"
tiny_copy m7 && set_key "$tmp/m7/unet/config.json" sample_size 100000
case_ "unet sample_size 100000" 2 '"sample_size" = 100000: values must lie in 1..1024' "${nomodel[@]}" --model "$tmp/m7"
tiny_copy m8 && set_key "$tmp/m8/vae/config.json" block_out_channels '[16, 32, 32, 99999999]'
case_ "vae with 1e8 channels" 2 'vae/config.json: "block_out_channels" = [16,32,32,99999999]' "${nomodel[@]}" --model "$tmp/m8"
tiny_copy m9 && set_key "$tmp/m9/unet/config.json" block_out_channels '[16384, 16384, 16384, 16384]'
case_ "unet within the bounds but too big for memory" 2 'needs about ' "${nomodel[@]}" --model "$tmp/m9" --device cpu
tiny_copy m10 && printf '{"block_out_channels": [32, ' >"$tmp/m10/unet/config.json"
case_ "truncated unet/config.json" 2 'm10: unet/config.json is not valid JSON at line 1, column 29' "${nomodel[@]}" --model "$tmp/m10"
tiny_copy m11 && printf '[1, 2]\n' >"$tmp/m11/vae/config.json"
case_ "vae config that is a list" 2 'm11: vae/config.json is a JSON array, expected an object' "${nomodel[@]}" --model "$tmp/m11"
case_ "a .safetensors checkpoint that does not exist" 2 'nowhere.safetensors' "${nomodel[@]}" --model "$tmp/nowhere.safetensors"
tiny_copy m12 && printf 'not a safetensors file' >"$tmp/m12/vae/diffusion_pytorch_model.safetensors"
# (found when the weights load, after the device line: --quiet keeps the error the only line)
case_ "vae weights that are not safetensors" 2 'm12/vae/diffusion_pytorch_model.safetensors: header length' \
  "${nomodel[@]}" --model "$tmp/m12" --quiet

# ---- a refusal of the resource plan leaves no output at all, not even an empty archive or folder:
# every rank's memory is checked before rank 0 opens the outputs (issue 15). The CPU's RAM here;
# a GPU's free memory where this build has CUDA and the machine a GPU (skipped visibly otherwise).
nothing_made() {  # NAME ARGS...: case_, and neither --archive nor --out-dir exists afterwards
  local name=$1; shift
  case_ "$name" 2 'needs about ' "$@" --archive "$tmp/a.h5" --out-dir "$tmp/out"
  if [ -e "$tmp/out" ] || [ -e "$tmp/a.h5" ]; then
    echo "FAIL: $name: left $(ls -d "$tmp/out" "$tmp/a.h5" 2>/dev/null)"; fail=1; fi
}
nothing_made "CPU memory refusal with an archive and an output folder" \
  generate --model tiny --steps 2 --prompt cat --width 16384 --height 16384 --device cpu
case "$features" in
  *cuda*)
    if nvidia-smi -L >/dev/null 2>&1; then
      nothing_made "GPU memory refusal with an archive and an output folder" \
        generate --model tiny --steps 2 --prompt cat --width 16384 --height 16384 --device cuda --quiet
    else echo "skipped: GPU memory refusal (no GPU on this machine)"; fi ;;
  *) echo "skipped: GPU memory refusal (this build has no CUDA)" ;;
esac

echo "$cases bad-input cases"
[ "$cases" -ge 40 ] || { echo "FAIL: fewer than 40 cases"; fail=1; }

# ---- the default output folder (issue 15): no --out-dir/--archive writes ./sd_mpi-out/ ----
rm -rf "$tmp/cwd/sd_mpi-out"
"$sd" generate --model tiny --steps 2 --prompt cat >"$tmp/stdout" 2>"$tmp/stderr"; rc=$?
first=$(head -n 1 "$tmp/stderr")
if [ "$rc" -eq 0 ] && [ "$first" = "sd_mpi: writing PNG files to ./sd_mpi-out/ (give --out-dir or --archive to choose)" ] &&
   [ -s "$tmp/cwd/sd_mpi-out/000000.png" ]; then echo "ok: default output folder"; else
  echo "FAIL: default output folder (rc=$rc, first line \"$first\")"; sed 's/^/  | /' "$tmp/stderr"; fail=1; fi
exit $fail
