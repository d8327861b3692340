#!/usr/bin/python3
"""Reads an sd_mpi archive back with h5py, independently of our C++ reader.

  check_archive.py layout ARCHIVE EXPECT.json   the v1 layout (include/sdmpi/archive.h) and the
                                                rows/attributes listed in EXPECT.json; images of
                                                finished rows must follow the test formula and be
                                                zero outside their valid region
  check_archive.py same A.h5 B.h5               same rows, parameters, flags and image chunks
                                                (values, and stored bytes where h5py can read them)

Run with Debian's /usr/bin/python3 (h5py, numpy). Prints what is wrong and exits 1, or prints OK.
The test image formula (tests/unit/archive_test.cpp):
  pixel(g, y, x, c) = (g*37 + y*7 + x*3 + c*101 + (x*y) % 13) % 256
"""
import json
import sys

import h5py
import numpy as np

PER_ROW = ["index", "prompt_index", "sample", "prompt", "negative_prompt", "seed", "steps", "guidance",
           "sampler", "schedule", "eta", "clip_skip", "width", "height", "done", "error"]
STRINGS = {"prompt", "negative_prompt", "sampler", "schedule", "error"}
TYPES = {"index": "<i8", "prompt_index": "<i8", "sample": "<i8", "seed": "<i8", "steps": "<i4",
         "guidance": "<f4", "eta": "<f4", "clip_skip": "<i4", "width": "<i4", "height": "<i4", "done": "|u1"}

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def pattern(g, h, w):
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return ((g * 37 + y * 7 + x * 3 + c * 101 + (x * y) % 13) % 256).astype(np.uint8)


def check_layout(path, expect_path):
    with open(expect_path, encoding="utf-8") as f:
        expect = json.load(f)
    rows = expect["rows"]
    n = len(rows)
    with h5py.File(path, "r") as f:
        # Root attributes: strings come back as str (vlen UTF-8), integers as numpy ints.
        for key, want in expect["attrs"].items():
            check(key in f.attrs, f"root attribute {key} missing")
            if key in f.attrs:
                got = f.attrs[key]
                got = got.item() if hasattr(got, "item") else got
                check(got == want, f"attribute {key}: {got!r} != {want!r}")
        created = f.attrs.get("created", "")
        check(isinstance(created, str) and len(created) == 20 and created.endswith("Z"), f"created {created!r}")
        check(f.attrs["format_version"].dtype == np.int32, "format_version is not int32")

        images = f["images"]
        structural = len(failures)  # attribute mismatches above still let the row checks run
        check(images.dtype == np.uint8, f"images dtype {images.dtype}")
        check(images.ndim == 4 and images.shape[0] == n and images.shape[3] == 3, f"images shape {images.shape}")
        H, W = images.shape[1], images.shape[2]
        check(images.chunks == (1, H, W, 3), f"images chunks {images.chunks}")
        check(images.compression == "gzip", f"images compression {images.compression}")
        check(images.maxshape == (None, H, W, 3), f"images maxshape {images.maxshape}")
        check(images.attrs.get("layout") == "NHWC", "images layout attribute")
        check(H == max(r["height"] for r in rows) and W == max(r["width"] for r in rows), f"canvas {H}x{W}")

        for name in PER_ROW:
            check(name in f, f"dataset /{name} missing")
            if name not in f:
                continue
            d = f[name]
            check(d.shape == (n,), f"/{name} shape {d.shape}")
            if name in STRINGS:
                info = h5py.check_string_dtype(d.dtype)
                check(info is not None and info.encoding == "utf-8" and info.length is None,
                      f"/{name} is not a vlen UTF-8 string dataset ({info})")
            else:
                check(d.dtype.str == TYPES[name], f"/{name} dtype {d.dtype.str} != {TYPES[name]}")
        if len(failures) > structural:
            return

        seeds = f["seed"][:].view(np.uint64)
        strings = {name: f[name].asstr()[:] for name in STRINGS}
        for r, want in enumerate(rows):
            for name in PER_ROW:
                if name in STRINGS:
                    got = strings[name][r]
                elif name == "seed":
                    got, want_v = int(seeds[r]), int(want["seed"])
                    check(got == want_v, f"row {r} seed {got} != {want_v}")
                    continue
                else:
                    got = f[name][r].item()
                want_v = want[name]
                if name in ("guidance", "eta"):
                    ok = np.float32(got) == np.float32(want_v)
                else:
                    ok = got == want_v
                check(ok, f"row {r} /{name}: {got!r} != {want_v!r}")
            g, w, h = want["index"], want["width"], want["height"]
            img = images[r]
            if want["done"] == 1:
                check(np.array_equal(img[:h, :w], pattern(g, h, w)), f"row {r} (item {g}): pixels differ")
            check(not img[h:, :].any() and not img[:, w:].any(), f"row {r} (item {g}): padding is not zero")
        # The int64 seed column is the bit pattern: 2^64-1 reads as -1.
        raw = f["seed"][:]
        for r, want in enumerate(rows):
            s = int(want["seed"])
            check(int(raw[r]) == (s - (1 << 64) if s >= (1 << 63) else s), f"row {r}: seed bit pattern")


def check_same(a_path, b_path):
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        for name in PER_ROW:
            da, db = a[name], b[name]
            check(da.dtype == db.dtype, f"/{name} dtype differs")
            va = da.asstr()[:] if name in STRINGS else da[:]
            vb = db.asstr()[:] if name in STRINGS else db[:]
            check(np.array_equal(va, vb), f"/{name} differs")
        ia, ib = a["images"], b["images"]
        check(ia.shape == ib.shape and ia.chunks == ib.chunks, f"images {ia.shape} vs {ib.shape}")
        check(ia.compression_opts == ib.compression_opts, "gzip level differs")
        if failures:
            return
        for r in range(ia.shape[0]):
            check(np.array_equal(ia[r], ib[r]), f"images row {r} differs")
            # Stored bytes: rows never written have no chunk in either file.
            offs = (r, 0, 0, 0)
            sa, sb = ia.id.get_chunk_info_by_coord(offs), ib.id.get_chunk_info_by_coord(offs)
            check(sa.size == sb.size, f"images row {r}: stored sizes {sa.size} vs {sb.size}")
            if sa.size and sb.size and hasattr(ia.id, "read_direct_chunk"):
                check(ia.id.read_direct_chunk(offs)[1] == ib.id.read_direct_chunk(offs)[1],
                      f"images row {r}: stored chunk bytes differ")
        # config_json records how this run was made (world size, batch size, shard): not compared.
        for key in ("format", "format_version", "model_path", "weights_hash", "fingerprint",
                    "total_items"):
            check(a.attrs[key] == b.attrs[key], f"attribute {key} differs")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("layout", "same"):
        print(__doc__)
        return 2
    if sys.argv[1] == "layout":
        check_layout(sys.argv[2], sys.argv[3])
    else:
        check_same(sys.argv[2], sys.argv[3])
    for f in failures[:20]:
        print("check_archive:", f)
    if failures:
        return 1
    print(f"check_archive: OK ({sys.argv[1]} {sys.argv[2]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
