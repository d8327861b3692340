#!/usr/bin/env bash
# SDXL through the command line, on make-model's tiny-sdxl folder: inspect names the family and
# both tokenizers; micro-conditioning given as flags and as JSONL keys gives the same image, and
# lands in the PNG parameters and the archive's columns; malformed flag values are one line,
# exit 2, no output; img2img with an init image. (Exactness against diffusers: tests/unit/sdxl_golden_test.cpp.)
set -euo pipefail
SD=${1:?usage: check_sdxl.sh SD_MPI}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$SD" make-model --preset tiny-sdxl --seed 3 "$tmp/m" >/dev/null 2>&1 || fail "make-model tiny-sdxl"
for f in text_encoder_2/model.safetensors tokenizer_2/special_tokens_map.json model_index.json; do
  [[ -f "$tmp/m/$f" ]] || fail "make-model wrote no $f"
done
grep -q '"StableDiffusionXLPipeline"' "$tmp/m/model_index.json" || fail "model_index.json is not an SDXL pipeline's"

out=$("$SD" inspect "$tmp/m")
grep -q '^family: SDXL$' <<<"$out" || fail "inspect: no 'family: SDXL' in: $out"
grep -q 'text encoder 2: CLIPTextModelWithProjection' <<<"$out" || fail "inspect: text encoder 2 missing"
grep -q 'tokenizer_2: 49408 tokens, pad "!" (id 0)' <<<"$out" || fail "inspect: tokenizer_2 line missing"

common=(--model "$tmp/m" --seed 11 --steps 2 --guidance 5 --width 64 --height 64)
"$SD" generate "${common[@]}" --prompt "a red fox" --original-size 512x384 --crop-top-left 16,8 \
  --target-size 80x64 --out-dir "$tmp/flags" >/dev/null 2>&1 || fail "generate with micro-conditioning flags"
printf '%s\n' '{"prompt": "a red fox", "original_width": 512, "original_height": 384, "crop_top": 16, "crop_left": 8, "target_width": 80, "target_height": 64}' \
  '{"prompt": "a red fox"}' > "$tmp/p.jsonl"
"$SD" generate "${common[@]}" --prompts "$tmp/p.jsonl" --out-dir "$tmp/jsonl" --archive "$tmp/a.h5" >/dev/null 2>&1 \
  || fail "generate from JSONL"
# Same item, same pixels (the PNG's text differs only if the parameters do).
cmp -s "$tmp/flags/000000.png" "$tmp/jsonl/000000.png" || fail "flags and JSONL keys give different images"
cmp -s "$tmp/jsonl/000000.png" "$tmp/jsonl/000001.png" && fail "micro-conditioning changed nothing"
grep -a -q 'SDXL original size: 512x384, SDXL crop top-left: 16x8, SDXL target size: 80x64, Model family: SDXL' \
  "$tmp/jsonl/000000.png" || fail "PNG parameters lack the micro-conditioning"
if command -v h5dump >/dev/null; then
  h5dump -d crop_top "$tmp/a.h5" | grep -q '(0): 16, 0' || fail "archive /crop_top is not [16, 0]"
fi

for bad in "--original-size 512" "--target-size 0x64" "--crop-top-left 8x8"; do
  set +e
  msg=$("$SD" generate --model "$tmp/m" --prompt x $bad --out-dir "$tmp/bad" 2>&1 >/dev/null)
  rc=$?
  set -e
  [[ $rc -eq 2 ]] || fail "$bad: exit $rc, expected 2"
  [[ $(wc -l <<<"$msg") -eq 1 && $msg == "sd_mpi: error: ${bad%% *} "* ]] || fail "$bad: message '$msg'"
  [[ ! -e "$tmp/bad" ]] || fail "$bad left $tmp/bad behind"
done
# img2img (StableDiffusionXLImg2ImgPipeline): an init image and a strength, recorded in the PNG.
"$SD" generate "${common[@]}" --prompt "a red fox" --init-image "$tmp/flags/000000.png" --strength 0.5 \
  --out-dir "$tmp/i2i" >/dev/null 2>&1 || fail "SDXL img2img"
grep -a -q 'Denoising strength: 0.5, Init image hash: ' "$tmp/i2i/000000.png" || fail "SDXL img2img PNG lacks the strength"
cmp -s "$tmp/i2i/000000.png" "$tmp/flags/000000.png" && fail "SDXL img2img gave the init image back"
echo "check_sdxl: all passed"
