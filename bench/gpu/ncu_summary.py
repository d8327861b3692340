#!/usr/bin/env python3
"""The hottest kernels of one profiled denoising step, from Nsight Compute's CSV (bench/gpu/deep.sh).

deep.sh runs `ncu --profile-from-start off --csv --page raw --print-kernel-base function
--metrics gpu__time_duration.sum,...` on `e2e_bench --profile-step K`, so the CSV holds exactly one
step's kernel launches. This groups them by kernel name and writes the ten that take the most GPU
time (calls, total and mean time, share of the step, SM and memory throughput as % of peak,
registers per thread, block size) as JSON with a markdown table in "table".

  ncu_summary.py NCU_CSV OUT_JSON [--top 10]

A CSV with no kernel rows (a dry run, or ncu that saw no launch) gives a summary saying so, with
"kernels": [] and exit status 0; an unreadable file is exit status 1 with one line naming it.
"""
import argparse
import csv
import json
import sys

TIME = "gpu__time_duration.sum"
SM = "sm__throughput.avg.pct_of_peak_sustained_elapsed"
MEM = "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"
REGS = "launch__registers_per_thread"
TO_US = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "second": 1e6, "s": 1e6}


def number(text):
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return None


def read_rows(path):
    """Kernel rows of ncu's raw CSV page (ncu's own ==PROF== lines and the units row skipped)."""
    with open(path, errors="replace") as f:
        lines = [l for l in f if not l.startswith("==")]
    start = next((i for i, l in enumerate(lines) if l.startswith('"ID"')), None)
    if start is None:
        return [], {}
    reader = csv.DictReader(lines[start:])
    rows, units = [], {}
    for row in reader:
        if not row.get("ID"):  # the units row
            units = row
            continue
        rows.append(row)
    return rows, units


def summarise(rows, units, top):
    scale = TO_US.get((units.get(TIME) or "nsecond").strip(), 1e-3)
    kernels = {}
    for row in rows:
        t = number(row.get(TIME))
        if t is None:
            continue
        us = t * scale
        name = row.get("Kernel Name", "?")
        k = kernels.setdefault(name, {"kernel": name, "calls": 0, "total_us": 0.0, "sm_weighted": 0.0,
                                      "mem_weighted": 0.0, "registers": 0, "block": row.get("Block Size", "")})
        k["calls"] += 1
        k["total_us"] += us
        k["sm_weighted"] += us * (number(row.get(SM)) or 0.0)
        k["mem_weighted"] += us * (number(row.get(MEM)) or 0.0)
        k["registers"] = max(k["registers"], int(number(row.get(REGS)) or 0))
    total = sum(k["total_us"] for k in kernels.values())
    ranked = sorted(kernels.values(), key=lambda k: -k["total_us"])[:top]
    out = []
    for k in ranked:
        t = k["total_us"]
        out.append({"kernel": k["kernel"], "calls": k["calls"], "total_us": round(t, 2),
                    "mean_us": round(t / k["calls"], 2), "share": round(t / total, 4) if total else 0.0,
                    "sm_pct": round(k["sm_weighted"] / t, 1) if t else None,
                    "memory_pct": round(k["mem_weighted"] / t, 1) if t else None,
                    "registers": k["registers"], "block": k["block"]})
    return out, total, len(rows), len(kernels)


def table(kernels, total_us, launches, distinct):
    if not kernels:
        return "(no kernel launches in the profile)"
    lines = [f"Step: {launches} launches of {distinct} kernels, {total_us / 1000:.3f} ms of kernel time "
             f"(serialised by the profiler: a sum, not the step's wall time)", "",
             "| # | kernel | calls | total µs | share | mean µs | SM % | mem % | regs | block |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, k in enumerate(kernels, 1):
        lines.append(f"| {i} | {k['kernel'][:60]} | {k['calls']} | {k['total_us']:.1f} | {100 * k['share']:.1f}% | "
                     f"{k['mean_us']:.1f} | {k['sm_pct']} | {k['memory_pct']} | {k['registers']} | {k['block']} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv")
    p.add_argument("json")
    p.add_argument("--top", type=int, default=10)
    a = p.parse_args()
    try:
        rows, units = read_rows(a.csv)
    except OSError as e:
        print(f"ncu_summary.py: {a.csv}: cannot read: {e}", file=sys.stderr)
        return 1
    kernels, total, launches, distinct = summarise(rows, units, a.top)
    summary = {"format": "sd_mpi-ncu-summary", "launches": launches, "distinct_kernels": distinct,
               "kernel_time_us": round(total, 2), "kernels": kernels,
               "table": table(kernels, total, launches, distinct)}
    with open(a.json, "w") as f:
        json.dump(summary, f, indent=1)
    print(summary["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
