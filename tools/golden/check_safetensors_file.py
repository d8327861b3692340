#!/usr/bin/env python3
"""Checks that the safetensors library reads a file that sd_mpi's SafetensorsWriter wrote.

Usage: check_safetensors_file.py FILE EXPECTED.json
EXPECTED.json: {"__metadata__": {...}, name: {"dtype": "F32", "shape": [...], "values": [...]}};
every tensor in FILE must be in EXPECTED with that dtype, shape and values (as float32), and the
metadata must match. Prints one line and exits 0 on success, 1 with the first difference.
Used by tests/unit/safetensors_test.cpp when SDMPI_GOLDEN_PY names a Python with safetensors.
"""
import json
import sys

import numpy as np
from safetensors import safe_open


def main():
    path, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        expected = json.load(f)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        want_meta = expected.get("__metadata__", {})
        if meta != want_meta:
            sys.exit(f"{path}: metadata {meta} != {want_meta}")
        keys = list(f.keys())
        for name in keys:
            if name not in expected:
                sys.exit(f"{path}: unexpected tensor {name}")
            want = expected[name]
            t = f.get_tensor(name)
            dtype = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16"}.get(str(t.dtype))
            if dtype != want["dtype"]:
                sys.exit(f"{path}: {name}: dtype {t.dtype}, expected {want['dtype']}")
            if list(t.shape) != want["shape"]:
                sys.exit(f"{path}: {name}: shape {list(t.shape)}, expected {want['shape']}")
            got = t.float().flatten().numpy()
            ref = np.array(want["values"], dtype=np.float64).astype(np.float32)
            if got.shape != ref.shape or not np.array_equal(got.view(np.uint32), ref.view(np.uint32)):
                sys.exit(f"{path}: {name}: values differ")
    print(f"{path}: safetensors reads {len(keys)} tensors as expected")


if __name__ == "__main__":
    main()
