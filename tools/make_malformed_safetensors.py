#!/usr/bin/env python3
"""Writes the safetensors bad-input corpus: tests/data/malformed/safetensors/.

Each case is a small file that breaks one rule of the format (docs/reference/sd15-semantics.md §7.3),
listed in manifest.json with a piece of the one-line error the reader must give for it
(tests/unit/safetensors_test.cpp checks each). A few valid files ("expect": null) sit beside them:
they must load, and they seed the fuzzer (tests/fuzz/safetensors_fuzz.cpp) together with the rest.
Python standard library only; deterministic.

Usage: tools/make_malformed_safetensors.py [out_dir]
"""
import json
import os
import struct
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "tests/data/malformed/safetensors")


def with_header(header, data=b"", pad=True, length=None):
    """8-byte little-endian length + header text (+ spaces to 8 bytes) + data."""
    text = header if isinstance(header, bytes) else header.encode("utf-8")
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def js(obj):
    return json.dumps(obj, separators=(",", ":"))


def f32(*values):
    return struct.pack("<%df" % len(values), *values)


CASES = []


def case(name, content, expect):
    CASES.append((name, content, expect))


# ---- the 8-byte length and the file size --------------------------------------------------------
case("empty.safetensors", b"", "too short for the 8-byte header length")
case("short_length.safetensors", b"\x10\x00\x00", "too short for the 8-byte header length")
case("truncated_header.safetensors", with_header(js({"a": entry("F32", [1], 0, 4)}))[:20],
     "runs past the end")
case("huge_header_length.safetensors", struct.pack("<Q", 1 << 40) + b"{}", "exceeds the 100000000-byte limit")
case("max_u64_header_length.safetensors", b"\xff" * 8 + b"{}", "exceeds the 100000000-byte limit")
case("zero_header_length.safetensors", struct.pack("<Q", 0) + b"{}", "too small for a JSON object")

# ---- the JSON header --------------------------------------------------------------------------------
case("bad_json.safetensors", with_header('{"a": {"dtype": "F32",'), "not valid JSON")
case("trailing_garbage.safetensors", with_header("{} xyz"), "not valid JSON")
case("invalid_utf8.safetensors", with_header(b'{"a\xff\xfe": 1}'), "not valid JSON")
case("header_array.safetensors", with_header("[1, 2, 3]"), "header is a JSON array")
case("header_string.safetensors", with_header('"tensors"'), "header is a JSON string")
case("deep_nesting.safetensors", with_header("[" * 5000 + "]" * 5000), "nests deeper than")
case("duplicate_key.safetensors",
     with_header('{"a":%s,"a":%s}' % (js(entry("F32", [1], 0, 4)), js(entry("F32", [1], 4, 8))), f32(1, 2)),
     "duplicate key 'a'")
case("duplicate_field.safetensors",
     with_header('{"a":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}', f32(1)),
     "duplicate key 'dtype'")
case("metadata_non_string.safetensors", with_header(js({"__metadata__": {"format": "pt", "step": 12}})),
     "__metadata__ value of 'step' is an unsigned integer, expected a string")
case("metadata_not_object.safetensors", with_header(js({"__metadata__": "pt"})), "__metadata__ is a JSON string")
case("entry_not_object.safetensors", with_header(js({"a": [0, 4]})), "tensor 'a': entry is a JSON array")
case("missing_dtype.safetensors", with_header(js({"a": {"shape": [1], "data_offsets": [0, 4]}}), f32(1)),
     "tensor 'a': missing \"dtype\"")
case("missing_shape.safetensors", with_header(js({"a": {"dtype": "F32", "data_offsets": [0, 4]}}), f32(1)),
     "tensor 'a': missing \"shape\"")
case("missing_offsets.safetensors", with_header(js({"a": {"dtype": "F32", "shape": [1]}}), f32(1)),
     "tensor 'a': missing \"data_offsets\"")
# ---- dtypes -------------------------------------------------------------------------------------------
case("unknown_dtype.safetensors", with_header(js({"a": entry("F31", [1], 0, 4)}), f32(1)), "unknown dtype 'F31'")
case("dtype_lowercase.safetensors", with_header(js({"a": entry("f32", [1], 0, 4)}), f32(1)), "unknown dtype 'f32'")
case("dtype_not_string.safetensors",
     with_header(js({"a": {"dtype": 7, "shape": [1], "data_offsets": [0, 4]}}), f32(1)),
     "\"dtype\" is an unsigned integer, expected a string")
# Known dtypes that sd_mpi does not read: the file opens, using the tensor fails.
case("unsupported_i64.safetensors", with_header(js({"position_ids": entry("I64", [3], 0, 24)}), b"\0" * 24),
     "has dtype I64, which is unsupported")
case("unsupported_f64.safetensors", with_header(js({"a": entry("F64", [2], 0, 16)}), b"\0" * 16),
     "has dtype F64, which is unsupported")
case("f4_odd_count.safetensors", with_header(js({"a": entry("F4", [3], 0, 2)}), b"\0\0"),
     "do not fill whole bytes")

# ---- shapes --------------------------------------------------------------------------------------------
case("shape_size_mismatch.safetensors", with_header(js({"a": entry("F32", [2, 3], 0, 20)}), b"\0" * 24),
     "shape [2, 3] of F32 needs 24 bytes, but data_offsets [0, 20] hold 20")
case("negative_shape.safetensors", with_header(js({"a": entry("F32", [-1, 4], 0, 16)}), b"\0" * 16),
     "shape[0] is a negative integer")
case("float_shape.safetensors", with_header(js({"a": entry("F32", [2.5], 0, 10)}), b"\0" * 16),
     "shape[0] is a non-integer number")
case("string_shape_dim.safetensors", with_header(js({"a": entry("F32", ["2"], 0, 8)}), b"\0" * 8),
     "shape[0] is a string")
case("shape_not_array.safetensors", with_header(js({"a": entry("F32", 2, 0, 8)}), b"\0" * 8),
     "\"shape\" is an unsigned integer, expected an array")
case("huge_dims_overflow.safetensors",
     with_header(js({"a": entry("F32", [1 << 40, 1 << 40, 1 << 40], 0, 0)})), "too large for any file")
case("huge_dim_u64.safetensors", with_header('{"a":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}}'),
     "too large for any file")
case("dim_beyond_u64.safetensors",
     with_header('{"a":{"dtype":"F32","shape":[99999999999999999999999],"data_offsets":[0,4]}}'),
     "shape[0] is a non-integer number")
case("number_overflow.safetensors",  # no double holds it: nlohmann throws out_of_range, not parse_error
     with_header('{"a":{"dtype":"F32","shape":[5e999],"data_offsets":[0,4]}}'), "header is not valid JSON: number overflow")
case("wrap_to_zero.safetensors",  # 2^32 * 2^32 wraps to 0 in 64-bit arithmetic
     with_header(js({"a": entry("F32", [1 << 32, 1 << 32], 0, 0)})), "too large for any file")

# ---- offsets --------------------------------------------------------------------------------------------
case("offsets_arity_1.safetensors",
     with_header(js({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}), f32(1)),
     "\"data_offsets\" must be an array [begin, end], got an array of length 1")
case("offsets_arity_3.safetensors",
     with_header(js({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}}), f32(1, 2)),
     "\"data_offsets\" must be an array [begin, end], got an array of length 3")
case("offsets_not_array.safetensors",
     with_header(js({"a": {"dtype": "F32", "shape": [1], "data_offsets": "0-4"}}), f32(1)),
     "\"data_offsets\" must be an array [begin, end], got a string")
case("offsets_negative.safetensors", with_header(js({"a": entry("F32", [1], -4, 0)}), f32(1)),
     "data_offsets[0] is a negative integer")
case("offsets_reversed.safetensors", with_header(js({"a": entry("F32", [1], 8, 4)}), f32(1, 2, 3)),
     "data_offsets [8, 4] end before they begin")
case("offsets_past_end.safetensors", with_header(js({"a": entry("F32", [100], 0, 400)}), f32(1, 2, 3, 4)),
     "lie past the end of the 16-byte data buffer")
_good = with_header(js({"a": entry("F32", [2], 0, 8), "b": entry("F32", [4], 8, 24)}), f32(1, 2, 3, 4, 5, 6))
case("truncated_data.safetensors", _good[:-5], "tensor 'b': data_offsets [8, 24] lie past the end")
case("overlapping.safetensors",
     with_header(js({"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 8, 24)}), f32(*range(6))),
     "tensors 'a' and 'b' [8, 24) overlap (bytes 8 to 16)")
# The reference parser wants the tensors to cover the data buffer exactly.
case("gap.safetensors", with_header(js({"a": entry("F32", [1], 4, 8)}), f32(0, 1)),
     "data buffer bytes [0, 4) belong to no tensor (gap before 'a')")
case("trailing_bytes.safetensors", with_header(js({"a": entry("F32", [1], 0, 4)}), f32(1, 2)),
     "4 bytes after the last tensor")
case("same_offsets.safetensors",
     with_header(js({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 0, 8)}), f32(1, 2)), "overlap")

# ---- valid files (they seed the fuzzer too) ----------------------------------------------------------------
case("valid_mixed.safetensors",
     with_header(js({"__metadata__": {"format": "pt"},
                     "w.f32": entry("F32", [2, 2], 0, 16),
                     "w.f16": entry("F16", [3], 16, 22),
                     "w.bf16": entry("BF16", [1], 22, 24),
                     "w.empty": entry("F32", [0, 3], 24, 24),
                     "w.scalar": entry("F32", [], 24, 28)}),
                 f32(1, -2, 3.5, 0) + struct.pack("<3H", 0x3C00, 0xC000, 0x0001) + struct.pack("<H", 0x3F80)
                 + f32(9)),
     None)
# An unpadded header (as early safetensors versions wrote): the data buffer is not 4-byte aligned.
_unpadded = js({"x": entry("F32", [3], 0, 12), "y": entry("F16", [1], 12, 14)})
_unpadded += " " * ((1 - len(_unpadded)) % 4)  # length ≡ 1 (mod 4): data starts at an odd byte
case("valid_unpadded.safetensors", with_header(_unpadded, f32(1, 2, 3) + struct.pack("<H", 0x3C00), pad=False),
     None)
case("valid_no_tensors.safetensors", with_header("{}"), None)
# Fields other than dtype/shape/data_offsets are ignored, as by the reference parser.
case("valid_unknown_field.safetensors",
     with_header(js({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "stride": [1]}}), f32(1)), None)

def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = {}
    for name, content, expect in CASES:
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(content)
        manifest[name] = {"expect": expect}
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(CASES)} files and manifest.json to {OUT}")


if __name__ == "__main__":
    main()
