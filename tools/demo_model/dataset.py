"""The demo model's synthetic world: captioned 64x64 pictures of flat shapes.

A caption names every attribute the picture has, from a small grammar:

    "{count} {size} {colour} {shape}[s] {position} on a {background} background"
    e.g. "two small red circles on the left on a blue background"

Rendering is plain numpy, driven by one numpy Generator, so a seed gives the same pictures on
every machine. Some (colour, shape, background) triples never appear in training
(HELD_OUT_TRIPLES): the semantic test (tests/unit/demo_model_test.cpp) draws its captions from
them, so it checks that the model composes words it learned apart, not that it remembers images.

The detector in that test relies on the constants here (PALETTE, REGIONS, group_position, sizes):
change them together.
"""
from __future__ import annotations

import numpy as np

SIZE = 64  # image side in pixels

# Well-separated colours (the detector classifies each pixel to the nearest of these).
PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS = list(PALETTE)
SHAPES = ["circle", "square", "triangle"]
COUNTS = {"one": 1, "two": 2, "three": 3}
# Radius of the shape's bounding circle, in pixels.
RADIUS = {"small": 5.0, "large": 8.5}
# Where the shapes' centres may fall (x0, y0, x1, y1), and the words that say so. Every shape must
# lie inside its region's box, so "left" keeps the whole group in the left half. The boxes overlap
# (a group in the top-left corner is inside "left" and "top"), so a picture also needs its group's
# centre in the word's zone (group_position), else it is placed again: each word then names one
# unambiguous place, the one the test's detector reads.
REGIONS = {
    "on the left": (0, 0, 32, 64),
    "on the right": (32, 0, 64, 64),
    "at the top": (0, 0, 64, 32),
    "at the bottom": (0, 32, 64, 64),
    "in the center": (10, 10, 54, 54),
}
GAP = 4.0  # pixels between two shapes' bounding circles, so the detector sees separate blobs
# How far (pixels) the group's centre keeps from the zones' borders: the VAE's 4x4 blocks move a
# drawn centroid by a pixel or two, which must not change the word.
ZONE_MARGIN = 3.0


def group_position(cx: float, cy: float) -> str:
    """The position word of a group centred at (cx, cy): the last word of its REGIONS key, or ""
    between zones. tests/unit/demo_model_test.cpp's detect() applies the same rule to the blobs'
    centroid."""
    if abs(cx - 32) <= 10 and abs(cy - 32) <= 10:
        return "center"
    if cx < 28 and abs(cx - 32) > abs(cy - 32):
        return "left"
    if cx > 36 and abs(cx - 32) > abs(cy - 32):
        return "right"
    if cy < 28:
        return "top"
    if cy > 36:
        return "bottom"
    return ""


def clearly_at(pts, region: str) -> bool:
    """True when the centre of pts, moved up to ZONE_MARGIN either way, still reads as region."""
    cx = sum(p[0] for p in pts) / len(pts)
    cy = sum(p[1] for p in pts) / len(pts)
    m = ZONE_MARGIN
    return all(group_position(cx + dx, cy + dy) == region.split()[-1] for dx in (-m, 0, m) for dy in (-m, 0, m))

# (colour, shape, background) never shown in training; each colour, shape and background still
# appears in plenty of other triples.
HELD_OUT_TRIPLES = [
    ("red", "triangle", "green"),
    ("green", "circle", "white"),
    ("blue", "square", "yellow"),
    ("yellow", "circle", "black"),
    ("white", "triangle", "blue"),
    ("black", "square", "red"),
    ("red", "square", "white"),
    ("green", "triangle", "black"),
    ("blue", "circle", "red"),
    ("yellow", "square", "green"),
]


def caption(count: str, size: str, colour: str, shape: str, region: str, background: str) -> str:
    noun = shape if COUNTS[count] == 1 else shape + "s"
    return f"{count} {size} {colour} {noun} {region} on a {background} background"


def _place(rng: np.random.Generator, n: int, r: float, box) -> list[tuple[float, float]]:
    """n centres inside box, each shape fully inside it, GAP apart; retries until it fits."""
    x0, y0, x1, y1 = box
    lo_x, hi_x, lo_y, hi_y = x0 + r + 1, x1 - r - 1, y0 + r + 1, y1 - r - 1
    for _ in range(1000):
        pts = []
        for _ in range(n):
            for _ in range(200):
                p = (rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y))
                if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= (2 * r + GAP) ** 2 for q in pts):
                    pts.append(p)
                    break
        if len(pts) == n:
            return pts
    raise RuntimeError(f"cannot place {n} shapes of radius {r} in {box}")


_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5


def _mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = _XX - cx, _YY - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":  # same area as the circle would be too big; a square inside its circle
        h = r * 0.8
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    # upward triangle inscribed in the circle: apex up, base below the centre
    base_y = r * 0.6
    half_w = (base_y + r) / np.sqrt(3.0) * 1.15
    return (dy <= base_y) & (dy >= -r) & (np.abs(dx) <= half_w * (dy + r) / (base_y + r))


def render(count: str, size: str, colour: str, shape: str, region: str, background: str,
           rng: np.random.Generator) -> np.ndarray:
    """One uint8 (64, 64, 3) picture of the caption's scene."""
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:] = PALETTE[background]
    r = RADIUS[size]
    for _ in range(1000):
        centres = _place(rng, COUNTS[count], r, REGIONS[region])
        if clearly_at(centres, region):
            break
    else:
        raise RuntimeError(f"cannot place {count} {size} shapes clearly {region}")
    for cx, cy in centres:
        img[_mask(shape, cx, cy, r)] = PALETTE[colour]
    return img


# Each attribute's words, in the order of the label that attributes_of gives it.
ATTRIBUTE_WORDS = {"count": list(COUNTS), "size": list(RADIUS), "colour": COLOURS, "shape": SHAPES,
                   "position": [r.split()[-1] for r in REGIONS], "background": COLOURS}


def attributes_of(text: str) -> dict[str, int]:
    """The label of each attribute a caption of the grammar names (the inverse of caption())."""
    w = text.split()
    words = {"count": w[0], "size": w[1], "colour": w[2], "shape": w[3].removesuffix("s"), "position": w[6],
             "background": w[9]}
    return {a: ATTRIBUTE_WORDS[a].index(words[a]) for a in ATTRIBUTE_WORDS}


def is_held_out(colour: str, shape: str, background: str) -> bool:
    return (colour, shape, background) in HELD_OUT_TRIPLES


def sample_attributes(rng: np.random.Generator, held_out: bool = False) -> tuple:
    """A random caption's attributes, from the training triples (or only the held-out ones)."""
    while True:
        if held_out:
            colour, shape, background = HELD_OUT_TRIPLES[rng.integers(len(HELD_OUT_TRIPLES))]
        else:
            colour = COLOURS[rng.integers(len(COLOURS))]
            shape = SHAPES[rng.integers(len(SHAPES))]
            background = COLOURS[rng.integers(len(COLOURS))]
            if background == colour or is_held_out(colour, shape, background):
                continue
        count = list(COUNTS)[rng.integers(len(COUNTS))]
        size = list(RADIUS)[rng.integers(len(RADIUS))]
        region = list(REGIONS)[rng.integers(len(REGIONS))]
        return count, size, colour, shape, region, background


def make_batch(rng: np.random.Generator, n: int, held_out: bool = False):
    """n (caption, uint8 image) pairs."""
    caps, imgs = [], []
    for _ in range(n):
        a = sample_attributes(rng, held_out)
        caps.append(caption(*a))
        imgs.append(render(*a, rng))
    return caps, np.stack(imgs)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="A contact sheet of training pictures, or held-out test prompts.")
    ap.add_argument("--sheet", help="write 16 training pictures to this PNG and print their captions")
    ap.add_argument("--heldout", type=int, help="print this many captions of held-out triples (the semantic "
                    "test's tests/data/demo/heldout_prompts.txt)")
    args = ap.parse_args()
    if args.sheet:
        from PIL import Image

        caps, imgs = make_batch(np.random.default_rng(0), 16)
        sheet = imgs.reshape(4, 4, SIZE, SIZE, 3).transpose(0, 2, 1, 3, 4).reshape(4 * SIZE, 4 * SIZE, 3)
        Image.fromarray(sheet).resize((8 * SIZE, 8 * SIZE), Image.NEAREST).save(args.sheet)
        print("\n".join(caps))
    if args.heldout:
        rng = np.random.default_rng(2024)
        print("\n".join(caption(*sample_attributes(rng, held_out=True)) for _ in range(args.heldout)))
