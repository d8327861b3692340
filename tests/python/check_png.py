#!/usr/bin/python3
"""Reads PNG files written by sd_mpi back with PIL, independently of libpng in our tests.

  check_png.py EXPECT.json

EXPECT.json lists cases: {"path", "seed", "width", "height", "parameters", "prompt", "chunk",
"fields"}. For each file this checks: PIL opens it as RGB of that size; its pixels follow the test
formula; PIL's img.info["parameters"] is the expected text; the raw chunk holding it has type
"chunk" (tEXt for Latin-1 text, iTXt otherwise) and comes before the image data; and an A1111-style
reading of the text (prompt, "Negative prompt:", "Key: value" pairs with JSON-quoted values) finds
the prompt and the expected fields.

Run with Debian's /usr/bin/python3 (PIL, numpy). Prints what is wrong and exits 1, or prints OK.
The test image formula (tests/unit/png_test.cpp):
  pixel(seed, y, x, c) = (seed*37 + y*7 + x*3 + c*101 + (x*y) % 13) % 256
"""
import json
import re
import struct
import sys

import numpy as np
from PIL import Image

failures = []

# "Key: value" pairs as A1111's infotext reader splits them: a value is either a JSON string in
# double quotes or runs to the next comma.
PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def check(cond, what):
    if not cond:
        failures.append(what)


def pattern(seed, h, w):
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    return ((seed * 37 + y * 7 + x * 3 + c * 101 + (x * y) % 13) % 256).astype(np.uint8)


def chunks(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8].decode("ascii")
        out.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def read_infotext(text):
    """(prompt, negative prompt, {key: value}) the way A1111 reads its own infotext."""
    lines = text.strip().split("\n")
    last = lines[-1]
    if len(PAIR.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = "", "", False
    for line in lines[:-1]:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        if in_negative:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    fields = {}
    for key, value in PAIR.findall(last):
        if value.startswith('"') and value.endswith('"'):
            value = json.loads(value)
        fields[key] = value
    if negative:
        fields["Negative prompt"] = negative
    return prompt, fields


def check_case(case):
    path = case["path"]
    img = Image.open(path)
    check(img.mode == "RGB", f"{path}: mode {img.mode}")
    check(img.size == (case["width"], case["height"]), f"{path}: size {img.size}")
    check(np.array_equal(np.asarray(img), pattern(case["seed"], case["height"], case["width"])),
          f"{path}: pixels differ")
    check(img.info.get("parameters") == case["parameters"],
          f"{path}: parameters {img.info.get('parameters')!r} != {case['parameters']!r}")

    kinds = [k for k, _ in chunks(path)]
    text_chunks = [(k, d) for k, d in chunks(path) if k in ("tEXt", "iTXt", "zTXt")]
    check(len(text_chunks) == 1 and text_chunks[0][0] == case["chunk"],
          f"{path}: text chunks {[k for k, _ in text_chunks]}, expected one {case['chunk']}")
    check(text_chunks and kinds.index(text_chunks[0][0]) < kinds.index("IDAT"), f"{path}: text after IDAT")
    if text_chunks and text_chunks[0][0] == "iTXt":
        # keyword \0, compression flag 0, method 0, empty language \0, empty translated keyword \0
        check(text_chunks[0][1].startswith(b"parameters\x00\x00\x00\x00\x00"), f"{path}: iTXt header")

    prompt, fields = read_infotext(img.info.get("parameters", ""))
    check(prompt == case["prompt"].strip(), f"{path}: prompt read back as {prompt!r}")
    for key, want in case["fields"].items():
        check(fields.get(key) == want, f"{path}: field {key!r} is {fields.get(key)!r}, expected {want!r}")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)
    for case in cases:
        check_case(case)
    for f in failures[:20]:
        print("check_png:", f)
    if failures:
        return 1
    print(f"check_png: OK ({len(cases)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
