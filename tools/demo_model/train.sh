#!/usr/bin/env bash
# Retrains the demo model from scratch into tools/demo_model/model/ (about 13 minutes of one core).
# Needs the pinned reference environment (tools/golden/requirements.txt) in tools/golden/.venv and
# a built sd_mpi (for the standard CLIP tokenizer files): tools/demo_model/train.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build"/sd_mpi make-model --preset tiny "$work/tiny" >/dev/null  # its tokenizer/ and scheduler/
mkdir -p tools/demo_model/samples
nice -n 5 tools/golden/.venv/bin/python tools/demo_model/train.py tools/demo_model/model \
  --base "$work/tiny" --check-dir tools/demo_model/samples
