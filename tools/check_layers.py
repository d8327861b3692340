#!/usr/bin/env python3
"""Holds every #include of the product's code to the layer table (docs/architecture.md).

Usage: tools/check_layers.py BUILD_DIR/layers.json [SOURCE_DIR]

CMakeLists.txt writes layers.json from its sdmpi_layer() calls: for each layer its folders, the
layers it uses, its public headers (include/sdmpi/*.h), the SDMPI_HAVE_* macros it may test and
the system headers only it may include. This script fails, listing each problem as
"file:line: what", when
  - a file under src/, include/sdmpi/ or kernels/ belongs to no layer (or a header to two);
  - a quoted #include names a header of a layer that the including layer does not use;
  - a system header that a layer owns (mpi.h, cudnn.h, hdf5.h, png.h, ...) is included elsewhere;
  - an #if tests an SDMPI_HAVE_* macro its layer does not own, or mentions CUDA outside the
    CUDA layers (device code lives in src/backend/cuda and kernels/ only).
The app (src/app) may use every layer but is held to the system-header and macro rules too.
"""
import fnmatch
import json
import os
import re
import sys

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
IF_RE = re.compile(r'^\s*#\s*(if|ifdef|ifndef|elif)\b(.*)$')
MACRO_RE = re.compile(r'\bSDMPI_HAVE_[A-Z0-9_]+\b')
CUDA_LAYERS = {"kernels", "backend-cuda"}
SOURCE_EXT = (".cpp", ".h", ".cu", ".cuh", ".hpp", ".h.in")
GENERATED = {"sdmpi/version.h": "core"}


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        table = json.load(f)
    root = os.path.abspath(argv[2] if len(argv) > 2 else os.path.join(os.path.dirname(__file__), ".."))
    layers = {l["name"]: l for l in table["layers"]}
    app = table["app"]
    app.update(uses=list(layers), headers=[], macros=[], system=[])
    layers["app"] = app
    problems = []

    # Which layer each folder and public header belongs to.
    dir_layer = {}
    for name, l in layers.items():
        for d in l.get("dirs", []):
            dir_layer[d.rstrip("/")] = name
    header_layer = {}
    for name, l in layers.items():
        for h in l.get("headers", []):
            if h in header_layer:
                problems.append(f"include/sdmpi/{h}: claimed by layers {header_layer[h]} and {name}")
            header_layer["sdmpi/" + h] = name
    header_layer.update(GENERATED)

    def layer_of_path(rel):
        best = None
        for d, name in dir_layer.items():
            if (rel == d or rel.startswith(d + "/")) and (best is None or len(d) > len(best[0])):
                best = (d, name)
        return best[1] if best else None

    files = []
    for top in ("src", "kernels"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for n in sorted(names):
                if n.endswith(SOURCE_EXT):
                    files.append(os.path.relpath(os.path.join(dirpath, n), root))
    inc_dir = os.path.join(root, "include", "sdmpi")
    for n in sorted(os.listdir(inc_dir)):
        if n.endswith(SOURCE_EXT):
            files.append(os.path.join("include", "sdmpi", n))

    def file_layer(rel):
        if rel.startswith("include/sdmpi/"):
            return header_layer.get("sdmpi/" + os.path.basename(rel))
        return layer_of_path(os.path.dirname(rel))

    for h in header_layer:
        if h not in GENERATED and not os.path.exists(os.path.join(root, "include", h)):
            problems.append(f"include/{h}: listed in CMakeLists.txt but missing")

    def resolve(rel, target):
        """The layer of a quoted include, or None if it cannot be found."""
        if target in header_layer:
            return header_layer[target]
        here = os.path.normpath(os.path.join(os.path.dirname(rel), target))
        for cand in (here, os.path.join("src", target), os.path.join("kernels", target)):
            if os.path.exists(os.path.join(root, cand)):
                return file_layer(cand)
        return None

    owned = []  # (pattern, layers owning it)
    for name, l in layers.items():
        for pat in l.get("system", []):
            owned.append((pat, name))

    for rel in files:
        layer = file_layer(rel)
        if layer is None:
            problems.append(f"{rel}: belongs to no layer (add its folder or header to an sdmpi_layer() in CMakeLists.txt)")
            continue
        l = layers[layer]
        allowed = set(l.get("uses", [])) | {layer}
        macros = set(l.get("macros", []))
        with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
        for no, line in enumerate(lines, 1):
            m = INCLUDE_RE.match(line)
            if m:
                kind, target = m.groups()
                if kind == '"':
                    to = resolve(rel, target)
                    if to is None:
                        problems.append(f"{rel}:{no}: #include \"{target}\" is not a file of any layer")
                    elif to not in allowed:
                        problems.append(f"{rel}:{no}: layer {layer} includes \"{target}\" of layer {to}, "
                                        f"which it does not use (uses: {', '.join(sorted(allowed - {layer})) or 'nothing'})")
                else:
                    owners = {n for pat, n in owned if fnmatch.fnmatch(target, pat)}
                    if owners and layer not in owners:
                        problems.append(f"{rel}:{no}: <{target}> belongs to layer {', '.join(sorted(owners))}, "
                                        f"not {layer}")
                continue
            m = IF_RE.match(line)
            if m:
                cond = m.group(2)
                for macro in MACRO_RE.findall(cond):
                    if macro not in macros:
                        problems.append(f"{rel}:{no}: layer {layer} tests {macro}, which is not its to test "
                                        f"(the build selects sources instead, see CMakeLists.txt)")
                if re.search(r"cuda", cond, re.IGNORECASE) and layer not in CUDA_LAYERS:
                    problems.append(f"{rel}:{no}: #{m.group(1)} on CUDA outside src/backend/cuda and kernels/")

    if problems:
        print(f"check_layers: {len(problems)} problem(s) against the layer table (docs/architecture.md):")
        for p in problems:
            print("  " + p)
        return 1
    print(f"check_layers: {len(files)} files in {len(layers)} layers, every include points down the table")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
