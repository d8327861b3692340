#!/usr/bin/env bash
# bench/gpu/check.sh: the GPU check of docs/design.md §10, kept under its old name. The check is
# bench/gpu/window.sh (one place for it): this runs it with the same arguments (--build-dir,
# --budget, --skip-build, --dtype, --no-torch, --full; see window.sh --help).
exec bash "$(dirname "${BASH_SOURCE[0]}")/window.sh" "$@"
