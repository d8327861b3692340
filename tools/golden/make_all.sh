#!/usr/bin/env bash
# Regenerates every golden file under tests/data/golden/ with the pinned reference environment.
#   GOLDEN_PY=~/.cache/sd_mpi-golden/bin/python SD_MPI=build/sd_mpi tools/golden/make_all.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${GOLDEN_PY:?set GOLDEN_PY to the python of a venv made from tools/golden/requirements.txt}
SD=${SD_MPI:-build/sd_mpi}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$SD" make-model --preset tiny "$tmp/tiny" >/dev/null
"$SD" make-model --preset tiny-sdxl "$tmp/tiny-sdxl" >/dev/null  # make_lora_golden.py's tiny_sdxl_kohya
for s in noise scheduler tokenizer tokenizer_json tokenizer_special ops checkpoint models vae_encoder; do
  echo "== make_${s}_golden.py"; "$PY" "tools/golden/make_${s}_golden.py"
done
echo "== make_pipeline_golden.py"; "$PY" tools/golden/make_pipeline_golden.py "$tmp/tiny/tokenizer"
echo "== make_img2img_golden.py"; "$PY" tools/golden/make_img2img_golden.py "$tmp/tiny/tokenizer"  # after pipeline/
echo "== make_sd2_golden.py"; "$PY" tools/golden/make_sd2_golden.py "$tmp/tiny/tokenizer"
echo "== make_sdxl_golden.py"; "$PY" tools/golden/make_sdxl_golden.py "$tmp/tiny/tokenizer"
echo "== make_sdxl_img2img_golden.py"; "$PY" tools/golden/make_sdxl_img2img_golden.py "$tmp/tiny/tokenizer"  # after sdxl/
echo "== make_lcm_golden.py"; "$PY" tools/golden/make_lcm_golden.py "$tmp/tiny/tokenizer"
echo "== make_lora_golden.py"; "$PY" tools/golden/make_lora_golden.py "$tmp/tiny/tokenizer" "$tmp/tiny-sdxl"  # after pipeline/, sd2/, sdxl/; needs peft
echo "== make_prompt_weighting_golden.py"; "$PY" tools/golden/make_prompt_weighting_golden.py "$tmp/tiny/tokenizer"
echo "== make_demo_golden.py"; "$PY" tools/golden/make_demo_golden.py  # the committed tools/demo_model/model
