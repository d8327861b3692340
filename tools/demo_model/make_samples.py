"""The README's sample grid: sd_mpi draws tools/demo_model/prompts.txt with the built-in demo model
(two seeds each, the quickstart's settings), and this joins the images into samples/grid.png, one
column per prompt, enlarged 2x without smoothing; samples/prompts.md lists the columns.

Run: python tools/demo_model/make_samples.py [SD_MPI]   (numpy and PIL; SD_MPI defaults to build/sd_mpi)
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS_PER_PROMPT = 2


def main():
    sd_mpi = sys.argv[1] if len(sys.argv) > 1 else "build/sd_mpi"
    prompts_file = os.path.join(HERE, "prompts.txt")
    prompts = [l.strip() for l in open(prompts_file) if l.strip()]
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sd_mpi, "generate", "--model", "demo", "--prompts", prompts_file, "--images-per-prompt",
                        str(SEEDS_PER_PROMPT), "--seed", "42", "--width", "64",  # the demo's own steps, guidance
                        "--height", "64", "--out-dir", out, "--progress", "none"], check=True)
        imgs = [np.asarray(Image.open(os.path.join(out, f"{i:06d}.png")).convert("RGB"))
                for i in range(len(prompts) * SEEDS_PER_PROMPT)]
    side, gap = 128, 4
    grid = np.full((SEEDS_PER_PROMPT * (side + gap) - gap, len(prompts) * (side + gap) - gap, 3), 255, np.uint8)
    for p in range(len(prompts)):
        for k in range(SEEDS_PER_PROMPT):
            big = imgs[p * SEEDS_PER_PROMPT + k].repeat(2, axis=0).repeat(2, axis=1)
            grid[k * (side + gap):k * (side + gap) + side, p * (side + gap):p * (side + gap) + side] = big
    os.makedirs(os.path.join(HERE, "samples"), exist_ok=True)
    Image.fromarray(grid).save(os.path.join(HERE, "samples", "grid.png"), optimize=True)
    with open(os.path.join(HERE, "samples", "prompts.md"), "w") as f:
        f.write("Columns of grid.png, left to right (seeds 42 + 2·column and the next; the demo model's defaults: 40 Euler a steps, guidance 2.5):\n\n")
        for i, p in enumerate(prompts):
            f.write(f"{i + 1}. {p}\n")
    print(f"wrote {HERE}/samples/grid.png")


if __name__ == "__main__":
    main()
