#!/usr/bin/env bash
# LoRA through the command line, on the built-in tiny model and tests/data/golden/lora/
# tiny_kohya.safetensors (made for it by tools/golden/make_lora_golden.py): --lora, a prompt's
# <lora:NAME:scale> with --lora-dir, and a JSONL "lora" list give the same pixels; scale 0 gives
# the plain image; a JSONL job mixing LoRA sets in one --batch-size gives every item the pixels of
# its own run; the PNG parameters carry the tag and A1111's "Lora hashes" (SHA-256 of the tensor
# data after the header, computed here from the file); an SDXL model (make-model tiny-sdxl) with a
# kohya SDXL file (LDM-named UNet keys) changes the image, scale 0 does not, and its PNG and archive
# row record it. Exactness against diffusers:
# tests/unit/lora_test.cpp. Bad input: tests/cli/check_bad_input.sh.
set -euo pipefail
SD=${1:?usage: check_lora.sh SD_MPI}
command -v python3 >/dev/null || { echo "no python3 to read PNG pixels: skipped"; exit 77; }
lora_dir=$(cd "$(dirname "$0")/../data/golden/lora" && pwd)
lora=$lora_dir/tiny_kohya.safetensors
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# shellcheck source=png_pixels.sh
. "$(dirname "$0")/png_pixels.sh"

common=(generate --model tiny --steps 2 --seed 5)
"$SD" "${common[@]}" --prompt "a cat" --out-dir "$tmp/plain" 2>/dev/null || fail "plain run"
"$SD" "${common[@]}" --prompt "a cat" --lora "$lora:0.8" --out-dir "$tmp/opt" 2>/dev/null || fail "--lora run"
"$SD" "${common[@]}" --prompt "a cat <lora:tiny_kohya:0.8>" --lora-dir "$lora_dir" --out-dir "$tmp/tag" 2>/dev/null || fail "<lora:> run"
"$SD" "${common[@]}" --prompt "a cat" --lora "$lora:0" --out-dir "$tmp/zero" 2>/dev/null || fail "--lora :0 run"
plain=$(png_pixels "$tmp/plain/000000.png"); with=$(png_pixels "$tmp/opt/000000.png")
[[ "$plain" != "$with" ]] || fail "the LoRA changed no pixel"
[[ "$(png_pixels "$tmp/tag/000000.png")" == "$with" ]] || fail "<lora:tiny_kohya:0.8> differs from --lora FILE:0.8"
[[ "$(png_pixels "$tmp/zero/000000.png")" == "$plain" ]] || fail "scale 0 differs from no LoRA"

header=$(od -An -t u8 -N8 "$lora" | tr -d ' ')
hash=$(tail -c +$((9 + header)) "$lora" | sha256sum | cut -c1-12)
grep -aq "a cat <lora:tiny_kohya:0.8>" "$tmp/opt/000000.png" || fail "PNG prompt without the <lora:> tag"
grep -aq "Lora hashes: \"tiny_kohya: $hash\"" "$tmp/opt/000000.png" || fail "PNG parameters without Lora hashes: \"tiny_kohya: $hash\""

# One job, sets interleaved, two per batch: each item as its own run made it.
cp "$lora" "$tmp/style.safetensors"
printf '%s\n' '{"prompt": "a cat", "seed": 5}' \
  '{"prompt": "a cat", "seed": 5, "lora": ["style.safetensors:0.8"]}' \
  '{"prompt": "a cat", "seed": 5}' \
  '{"prompt": "a cat", "seed": 5, "lora": [{"path": "style.safetensors", "scale": 0.8}]}' >"$tmp/p.jsonl"
"$SD" "${common[@]}" --prompts "$tmp/p.jsonl" --batch-size 2 --out-dir "$tmp/mixed" \
  --archive "$tmp/a.h5" 2>/dev/null || fail "mixed JSONL run"
for i in 0 2; do [[ "$(png_pixels "$tmp/mixed/00000$i.png")" == "$plain" ]] || fail "mixed item $i differs from the plain run"; done
for i in 1 3; do [[ "$(png_pixels "$tmp/mixed/00000$i.png")" == "$with" ]] || fail "mixed item $i differs from the --lora run"; done
if command -v h5dump >/dev/null; then  # the archive's /loras column: "" for plain rows, the set for the others
  col=$(h5dump -d /loras "$tmp/a.h5")
  [[ $(grep -c "name.*style.*sha256.*$hash" <<<"$col") -eq 2 ]] || fail "archive /loras: $col"
fi

# SDXL: make-model's tiny-sdxl and tiny_sdxl_kohya.safetensors (kohya's LDM-named UNet keys,
# lora_te1_/lora_te2_; made and proved by diffusers' loader in tools/golden/make_lora_golden.py).
xl_lora=$lora_dir/tiny_sdxl_kohya.safetensors
"$SD" make-model --preset tiny-sdxl --seed 3 "$tmp/xl" >/dev/null 2>&1 || fail "make-model tiny-sdxl"
xl=(generate --model "$tmp/xl" --steps 2 --seed 5 --guidance 5 --width 64 --height 64)
"$SD" "${xl[@]}" --prompt "a fox" --out-dir "$tmp/xl_plain" 2>/dev/null || fail "SDXL plain run"
"$SD" "${xl[@]}" --prompt "a fox" --lora "$xl_lora:0.8" --out-dir "$tmp/xl_lora" --archive "$tmp/xl.h5" 2>/dev/null \
  || fail "SDXL --lora run"
"$SD" "${xl[@]}" --prompt "a fox" --lora "$xl_lora:0" --out-dir "$tmp/xl_zero" 2>/dev/null || fail "SDXL --lora :0 run"
[[ "$(png_pixels "$tmp/xl_lora/000000.png")" != "$(png_pixels "$tmp/xl_plain/000000.png")" ]] || fail "the SDXL LoRA changed nothing"
[[ "$(png_pixels "$tmp/xl_zero/000000.png")" == "$(png_pixels "$tmp/xl_plain/000000.png")" ]] || fail "SDXL LoRA at scale 0 differs from none"
xl_header=$(od -An -t u8 -N8 "$xl_lora" | tr -d ' ')
xl_hash=$(tail -c +$((9 + xl_header)) "$xl_lora" | sha256sum | cut -c1-12)
grep -aq "a fox <lora:tiny_sdxl_kohya:0.8>" "$tmp/xl_lora/000000.png" || fail "SDXL PNG prompt without the <lora:> tag"
grep -aq "Lora hashes: \"tiny_sdxl_kohya: $xl_hash\"" "$tmp/xl_lora/000000.png" || fail "SDXL PNG without Lora hashes $xl_hash"
if command -v h5dump >/dev/null; then
  h5dump -d /loras "$tmp/xl.h5" | grep -q "tiny_sdxl_kohya.*sha256.*$xl_hash" || fail "SDXL archive /loras"
fi
echo "ok: --lora, <lora:>, JSONL lora, scale 0, mixed batches, PNG Lora hashes $hash; SDXL (LDM-named kohya keys) $xl_hash"
