#!/usr/bin/env bash
# Re-creates src/text/bpe_simple_vocab_16e6.txt.gz: OpenAI CLIP's byte-level BPE merge list (MIT
# licence), taken from the open_clip_torch wheel on PyPI. The CLIP tokenizer's vocab.json and
# merges.txt for SD 1.x are derived from it (src/text/clip_tokenizer.cpp).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps -q open_clip_torch==3.3.0 -d "$tmp"
(cd "$tmp" && python3 -m zipfile -e open_clip_torch-*.whl x >/dev/null)
cp "$tmp/x/open_clip/bpe_simple_vocab_16e6.txt.gz" "$here/src/text/"
echo "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a  $here/src/text/bpe_simple_vocab_16e6.txt.gz" | sha256sum -c
