#!/usr/bin/env python3
"""What the CUDA build made, checked without a GPU (the ctest test cuda.build_report).

Usage: tools/check_cuda_build.py BUILD_DIR [--table FILE.md]
       tools/check_cuda_build.py --self-test

1. Resources: tools/cmake/cuda_launcher.sh keeps ptxas's -v report of every kernels/ object in
   BUILD_DIR/ptxas/<object>.ptxas. Each kernel entry (per architecture) has its registers, stack
   frame, spill stores/loads and static shared memory. The check fails on
     - any spill (stores or loads) in the attention, GEMM-epilogue (elementwise, conv, im2col,
       linear_geglu) and norm kernels, whose speed depends on staying in registers;
     - static shared memory over the sm_90 limit per block (227 KiB).
   It writes the whole table (kernel, architecture, registers, spills, smem) to --table.
2. Architectures: every object of libsdmpi_kernels.a must hold sm_80 and sm_90a machine code
   (cuobjdump --list-elf; cuobjdump comes from PyPI's nvidia-cuda-cuobjdump, see tools/setup.sh).
Exits 0 when both hold, 1 otherwise (each problem on one line), 77 when the build has no CUDA.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

SM90_SMEM_LIMIT = 227 * 1024
# Kernels that must not spill: by the source file their object comes from.
NO_SPILL_SOURCES = ("attention", "norm", "elementwise", "conv_direct", "im2col", "linear_geglu")
REQUIRED_ARCHS = ("sm_80", "sm_90a")

ENTRY_RE = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
FRAME_RE = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
USED_RE = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


def demangle(names):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out)) if len(out) == len(names) else {n: n for n in names}


def short(name):
    """`void sdmpi::kernels::(anonymous namespace)::norm_kernel<__half>(float)` → `norm_kernel<__half>`."""
    name = name.replace("(anonymous namespace)::", "")
    depth, end = 0, len(name)
    for i in range(len(name) - 1, -1, -1):  # drop the parameter list at the end
        if name[i] == ")":
            depth += 1
        elif name[i] == "(":
            depth -= 1
            if depth == 0:
                end = i
                break
    name = name[:end]
    depth, cut = 0, 0
    for i, ch in enumerate(name):  # drop the return type and the namespaces, not template arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch in ": " and depth == 0:
            cut = i + 1
    return name[cut:]


def parse_reports(folder):
    entries = []
    for path in sorted(glob.glob(os.path.join(folder, "*.ptxas"))):
        source = os.path.basename(path).split(".")[0]
        current = None
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = ENTRY_RE.search(line)
                if m:
                    current = {"source": source, "name": m.group(1), "arch": m.group(2), "regs": 0,
                               "stack": 0, "spill_st": 0, "spill_ld": 0, "smem": 0}
                    entries.append(current)
                    continue
                if current is None:
                    continue
                m = FRAME_RE.search(line)
                if m:
                    current["stack"], current["spill_st"], current["spill_ld"] = map(int, m.groups())
                    continue
                m = USED_RE.search(line)
                if m:
                    current["regs"] = int(m.group(1))
                    current["smem"] = int(m.group(2) or 0)
    return entries


def resource_problems(entries):
    """The rules of 1. on parsed entries (adds each entry's short name as "pretty")."""
    problems = []
    names = demangle(sorted({e["name"] for e in entries}))
    for e in entries:
        e["pretty"] = short(names.get(e["name"], e["name"]))
        where = f"{e['source']}.cu {e['pretty']} ({e['arch']})"
        if (e["spill_st"] or e["spill_ld"]) and e["source"].startswith(NO_SPILL_SOURCES):
            problems.append(f"{where}: spills {e['spill_st']} bytes stored / {e['spill_ld']} loaded")
        if e["smem"] > SM90_SMEM_LIMIT:
            problems.append(f"{where}: {e['smem']} bytes of static shared memory, over the sm_90 limit {SM90_SMEM_LIMIT}")
    return problems


def self_test():
    """The rules catch what they are for, on a synthetic report (runs without CUDA)."""
    import tempfile
    report = """ptxas info    : Compiling entry function '_Z4spillPf' for 'sm_90a'
ptxas info    : Function properties for _Z4spillPf
    8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 240000 bytes smem
ptxas info    : Compiling entry function '_Z4finePf' for 'sm_80'
ptxas info    : Function properties for _Z4finePf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
"""
    with tempfile.TemporaryDirectory() as d:
        for source in ("attention_flash", "convert"):
            with open(os.path.join(d, f"{source}.cu.o.ptxas"), "w") as f:
                f.write(report)
        entries = parse_reports(d)
    assert len(entries) == 4, entries
    assert entries[0]["regs"] == 255 and entries[0]["spill_st"] == 8 and entries[0]["smem"] == 240000, entries[0]
    problems = resource_problems(entries)
    spills = [p for p in problems if "spills" in p]
    smem = [p for p in problems if "shared memory" in p]
    # attention spills count, convert's do not; smem over the limit counts in both.
    assert len(spills) == 1 and spills[0].startswith("attention_flash.cu"), problems
    assert len(smem) == 2, problems
    print("check_cuda_build: self-test passed (spills in attention kernels and smem over 227 KiB are caught)")
    return 0


def find_cuobjdump():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    local = glob.glob(os.path.join(root, ".cuda-tools", "nvidia", "cu*", "bin", "cuobjdump"))  # tools/setup.sh
    for cand in [os.environ.get("CUOBJDUMP"), shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"] + local:
        if cand and os.path.exists(cand):
            return cand
    try:
        import nvidia  # PyPI's CUDA tool wheels (nvidia-cuda-cuobjdump) install nvidia/cu*/bin/
        for base in nvidia.__path__:
            for cand in glob.glob(os.path.join(base, "cu*", "bin", "cuobjdump")):
                return cand
    except ImportError:
        pass
    return None


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    if argv[1] == "--self-test":
        return self_test()
    build = argv[1]
    table = argv[argv.index("--table") + 1] if "--table" in argv else None
    library = os.path.join(build, "libsdmpi_kernels.a")
    if not os.path.exists(library):
        print("check_cuda_build: this build has no CUDA kernels (no libsdmpi_kernels.a): skipped")
        return 77
    problems = []

    entries = parse_reports(os.path.join(build, "ptxas"))
    if not entries:
        problems.append(f"{build}/ptxas: no ptxas reports (is kernels/ built through tools/cmake/cuda_launcher.sh?)")
    problems += resource_problems(entries)
    if table:
        with open(table, "w", encoding="utf-8") as f:
            f.write("| source | kernel | arch | registers | stack | spill st/ld (B) | static smem (B) |\n")
            f.write("|---|---|---|---|---|---|---|\n")
            for e in sorted(entries, key=lambda e: (e["source"], e["pretty"], e["arch"])):
                f.write(f"| {e['source']} | `{e['pretty']}` | {e['arch']} | {e['regs']} | {e['stack']} | "
                        f"{e['spill_st']}/{e['spill_ld']} | {e['smem']} |\n")

    cuobjdump = find_cuobjdump()
    if not cuobjdump:
        problems.append("cuobjdump not found (tools/setup.sh installs PyPI's nvidia-cuda-cuobjdump; or set CUOBJDUMP)")
    else:
        listing = subprocess.run([cuobjdump, "--list-elf", library], capture_output=True, text=True)
        if listing.returncode != 0:
            problems.append(f"cuobjdump --list-elf {library} failed: {listing.stderr.strip()}")
        members = {}
        member = None
        for line in listing.stdout.splitlines():
            m = re.match(r"member .*:(\S+\.o):", line)
            if m:
                member = m.group(1)
                members.setdefault(member, set())
                continue
            m = re.search(r"\.(sm_\w+)\.cubin", line)
            if m and member:
                members[member].add(m.group(1))
        if not members:
            problems.append(f"cuobjdump lists no machine code in {library}")
        for member, archs in sorted(members.items()):
            missing = [a for a in REQUIRED_ARCHS if a not in archs]
            if missing:
                problems.append(f"{member}: no {', '.join(missing)} code (has {', '.join(sorted(archs)) or 'none'})")

    kernels = len({e['name'] for e in entries})
    spilling = sum(1 for e in entries if e["spill_st"] or e["spill_ld"])
    if problems:
        print(f"check_cuda_build: {len(problems)} problem(s):")
        for p in problems:
            print("  " + p)
        return 1
    print(f"check_cuda_build: {kernels} kernels x {len({e['arch'] for e in entries})} architectures, "
          f"{spilling} entries with spills (none in attention/epilogue/norm), static smem within the sm_90 limit; "
          f"every object has {' and '.join(REQUIRED_ARCHS)} code" + (f"; table in {table}" if table else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
