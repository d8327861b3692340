#!/usr/bin/env bash
# SDXL row of the CPU end-to-end benchmark (issue 12): run_e2e.sh with PRESET=sdxl, i.e. sd_mpi
# against diffusers' StableDiffusionXLPipeline on make-model's sdxl weights (SDXL base 1.0's
# shapes, random, F16 files, 6.5 GB), at 512² with a few Euler steps: each text encoder standalone,
# UNet step and VAE decode from one generation, load, peak RSS of each process. The engines run one
# after the other (float32 SDXL is ~14 GB of weights per process); the model folder, when made
# here, is deleted afterwards. Writes bench/results/cpu/<date>-e2e-sdxl.md (+ .json).
#   GOLDEN_PY=<venv python with diffusers> bench/cpu/run_e2e_sdxl.sh [SIZE=512] [STEPS=4] [REPS=2]
PRESET=sdxl exec "$(dirname "$0")/run_e2e.sh" "${1:-512}" "${2:-4}" "${3:-2}"
