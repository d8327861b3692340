#!/usr/bin/env python3
"""Writes the seeds of archive_struct_fuzz: short edit programs (tests/fuzz/archive_struct_fuzz.cpp
reads each with libFuzzer's FuzzedDataProvider: which base archive, how many edits, then each edit's
kind and arguments). The bytes are a fixed pseudo-random stream per seed, so every run of this
script writes the same files; coverage-guided mutation finds the rest.
Run from this folder: python3 make_seeds.py"""
import random

rng = random.Random(15)
for n, length in enumerate([2, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128]):
    with open(f"program_{n:02d}.bin", "wb") as f:
        f.write(bytes(rng.randrange(256) for _ in range(length)))
