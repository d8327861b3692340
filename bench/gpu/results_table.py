#!/usr/bin/env python3
"""The results file of a GPU window (bench/gpu/window.sh, bench/gpu/deep.sh).

window.sh calls this after every stage, so that a window killed by its time limit still leaves
$OUT/results.json and $OUT/results.md saying everything done so far. It reads the window's work
folder, written by window_lib.sh:

  device.env        key=value lines of the device query (gpu, driver, gpu_memory, cuda, torch, ...)
  stages.tsv        one line per finished stage: name, status, seconds, detail (tab separated)
  <stage>.xml       ctest's JUnit output of a test stage (smoke, tests); <stage>.log when ctest was
                    stopped before writing it
  <name>.jsonl      one JSON object per line from a benchmark (ops_bench, ops_torch), <name>.err
  <name>.subcheck   the output of bench/gpu/<name>_check.sh; <name>/*.json its result files

and writes RESULTS.json and RESULTS.md (replaced atomically). With --final it also prints the
short table (last on the terminal, where the device reply shows it), writes <work>/results.env
(failed and skipped test counts for the shell) and, with --store DIR, copies both files to
DIR/<date>-<device>.json/.md, the name under which they are committed (bench/results/gpu/).

  results_table.py --work DIR --out DIR [--kind window|deep] [--final] [--store DIR]
  results_table.py --validate RESULTS.json   checks a results file's shape (the dry-run test)
"""
import argparse
import datetime
import glob
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

FORMAT = "sd_mpi-gpu-window"
FORMAT_VERSION = 2
STATUSES = ("ok", "failed", "skipped", "timeout", "killed", "running")


def read_env_file(path):
    values = {}
    if os.path.exists(path):
        for line in open(path, errors="replace"):
            key, sep, value = line.rstrip("\n").partition("=")
            if sep and key.strip():
                values[key.strip()] = value.strip()
    return values


def read_stages(path):
    stages = []
    if os.path.exists(path):
        for line in open(path, errors="replace"):
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            try:
                seconds = int(parts[2])
            except ValueError:
                seconds = 0
            stages.append({"name": parts[0], "status": parts[1], "seconds": seconds,
                           "detail": parts[3] if len(parts) > 3 else ""})
    return stages


def clean_test_name(name):
    return re.sub(r"\s+#\s*GetParam\(\).*$", "", name or "").strip()


def read_junit(path, stage):
    tests = []
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        return [{"name": f"{stage}: ctest junit output", "stage": stage, "result": "failed", "seconds": 0,
                 "detail": f"unreadable: {e}"}]
    for case in root.iter("testcase"):
        status = case.get("status", "run")
        failure, skipped, out = case.find("failure"), case.find("skipped"), case.find("system-out")
        text = out.text if out is not None and out.text else ""
        if failure is not None or status == "fail":
            result = "failed"
        elif skipped is not None and "SKIP" in (skipped.get("message") or "").upper():
            result = "skipped"
        elif status in ("notrun", "disabled"):
            result = "not run"
        else:
            result = "passed"
        detail = ""
        if result == "failed":
            lines = [l.strip() for l in text.splitlines()
                     if re.search(r"Failure|error|Expected|Which is|relative|differ|off by|exception", l, re.I)]
            detail = " | ".join(lines[:5])[:700]
            if not detail and failure is not None:
                detail = (failure.get("message") or "")[:300]
        elif result == "skipped":
            m = re.search(r"Skipped\s*\n(.*)", text)
            detail = (m.group(1) if m else "")[:200]
        tests.append({"name": clean_test_name(case.get("name")), "stage": stage, "result": result,
                      "seconds": float(case.get("time", 0) or 0), "detail": detail})
    return tests


def read_ctest_log(path, stage):
    """What a ctest stopped before its JUnit file says in its log."""
    tests = []
    for line in open(path, errors="replace"):
        m = re.match(r"\s*\d+/\d+ Test\s+#\d+: (.*?) \.{2,}\s*(\*\*\*)?(\w+).*?([\d.]+) sec", line)
        if m:
            word = m.group(3).lower()
            result = "passed" if word == "passed" else "skipped" if word in ("skipped", "not") else "failed"
            tests.append({"name": clean_test_name(m.group(1)), "stage": stage, "result": result,
                          "seconds": float(m.group(4)), "detail": ""})
    tests.append({"name": f"{stage}: ctest", "stage": stage, "result": "not run", "seconds": 0,
                  "detail": "stopped by the time limit; tests after the last listed did not run"})
    return tests


def read_jsonl(path):
    rows = []
    for line in open(path, errors="replace"):
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return rows


def tail(path, limit):
    with open(path, errors="replace") as f:
        return f.read()[-limit:]


def collect(work, kind):
    env = os.environ
    device = read_env_file(os.path.join(work, "device.env"))
    stages = read_stages(os.path.join(work, "stages.tsv"))
    running = read_env_file(os.path.join(work, "running.env"))
    if running.get("stage"):
        stages.append({"name": running["stage"], "status": "running", "seconds": 0,
                       "detail": "started, not finished when this file was written"})

    tests = []
    for stage in ("smoke", "tests"):
        junit, log = os.path.join(work, stage + ".xml"), os.path.join(work, stage + ".log")
        if os.path.exists(junit):
            tests += read_junit(junit, stage)
        elif os.path.exists(log) and any(s["name"] == stage for s in stages):
            tests += read_ctest_log(log, stage)

    benchmarks, raw_outputs = [], {}
    for path in sorted(glob.glob(os.path.join(work, "*.jsonl"))):
        name = os.path.basename(path)[:-len(".jsonl")]
        rows = read_jsonl(path)
        for r in rows:
            r.setdefault("bench", name)
        benchmarks += rows
        if not rows and os.path.getsize(path):
            raw_outputs[name] = tail(path, 4000)
        err = os.path.join(work, name + ".err")
        if os.path.exists(err) and os.path.getsize(err):
            raw_outputs[name + " (stderr)"] = tail(err, 2000)

    sub_checks = {}
    for path in sorted(glob.glob(os.path.join(work, "*.subcheck"))):
        name = os.path.basename(path)[:-len(".subcheck")]
        entry = {"output": tail(path, 6000), "files": {}}
        for jf in sorted(glob.glob(os.path.join(work, name, "*.json"))):
            try:
                if os.path.getsize(jf) < 2_000_000:
                    entry["files"][os.path.basename(jf)] = json.load(open(jf))
            except (OSError, json.JSONDecodeError):
                pass
        sub_checks[name] = entry

    extra = {}
    # deep.sh: the sanitizer verdicts per test and the Nsight Compute summary.
    sanitizer = os.path.join(work, "sanitizer.tsv")
    if os.path.exists(sanitizer):
        extra["sanitizer"] = []
        for line in open(sanitizer, errors="replace"):
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 4:
                extra["sanitizer"].append({"tool": parts[0], "test": parts[1], "result": parts[2],
                                           "seconds": int(parts[3]) if parts[3].isdigit() else 0,
                                           "detail": parts[4] if len(parts) > 4 else ""})
    ncu = os.path.join(work, "ncu_summary.json")
    if os.path.exists(ncu):
        try:
            extra["ncu"] = json.load(open(ncu))
        except json.JSONDecodeError as e:
            extra["ncu"] = {"error": f"unreadable: {e}"}

    counts = {k: sum(1 for t in tests if t["result"] == k) for k in ("passed", "failed", "skipped", "not run")}
    now = datetime.datetime.now(datetime.timezone.utc)
    gpu = device.get("gpu", "unknown")
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
        "mode": env.get("WINDOW_MODE", "full"), "date": now.isoformat(timespec="seconds"),
        "device": gpu, "gpu_memory": device.get("gpu_memory", "unknown"), "driver": device.get("driver", "unknown"),
        "cuda": device.get("cuda", "unknown"), "cuda_architectures": env.get("WINDOW_ARCH", "unknown"),
        "torch": device.get("torch", "none"), "device_query": device,
        "commit": env.get("WINDOW_COMMIT", "unknown"), "budget_seconds": int(env.get("WINDOW_BUDGET", "0") or 0),
        "total_seconds": int(env.get("WINDOW_ELAPSED", "0") or 0),
        "stages": stages, "test_counts": counts, "tests": tests, "benchmarks": benchmarks,
        "raw_outputs": raw_outputs, "sub_checks": sub_checks,
    }
    record.update(extra)
    return record, now


def fmt(v, spec):
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def op_rows(benchmarks):
    """One row per (op, case, dtype) with sd_mpi and torch side by side."""
    rows, order = {}, []
    for b in benchmarks:
        if b.get("bench") != "cuda_ops" or "ms" not in b:
            continue
        key = (b.get("op", "?"), b.get("case", "?"), b.get("dtype", "?"))
        if key not in rows:
            rows[key] = {}
            order.append(key)
        rows[key][b.get("impl", "sd_mpi")] = b
    return [(key, rows[key].get("sd_mpi", {}), rows[key].get("torch", {})) for key in order]


def ratio(ours, theirs):
    return theirs["ms"] / ours["ms"] if ours.get("ms") and theirs.get("ms") else None


def markdown(r, now):
    c = r["test_counts"]
    md = [f"# GPU {r['kind']} {now:%Y-%m-%d %H:%M} UTC: {r['device']} ({r['mode']})", "",
          f"- device: {r['device']} ({r['gpu_memory']}), driver {r['driver']}, CUDA {r['cuda']}, "
          f"architectures {r['cuda_architectures']}",
          f"- commit: {r['commit']}; PyTorch: {r['torch']}; {r['total_seconds']} s of a {r['budget_seconds']} s budget",
          f"- tests: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, {c['not run']} not run", "",
          "## Stages", "", "| stage | status | s | detail |", "|---|---|---|---|"]
    md += [f"| {s['name']} | {s['status']} | {s['seconds']} | {s['detail'].replace('|', '/')} |" for s in r["stages"]]
    md.append("")
    if r["tests"]:
        md += ["## Tests", "", "| test | stage | result | s | detail |", "|---|---|---|---|---|"]
        md += [f"| {t['name']} | {t['stage']} | {t['result']} | {t['seconds']:.2f} | {t['detail'].replace('|', '/')} |"
               for t in r["tests"]]
        md.append("")
    ops = op_rows(r["benchmarks"])
    if ops:
        md += ["## Ops (median per call, CUDA events)", "",
               "| op | case | dtype | sd_mpi ms | torch ms | torch/sd_mpi | sd_mpi TFLOP/s | sd_mpi GB/s |",
               "|---|---|---|---|---|---|---|---|"]
        for key, ours, theirs in ops:
            md.append(f"| {key[0]} | {key[1]} | {key[2]} | {fmt(ours.get('ms'), '.4f')} | {fmt(theirs.get('ms'), '.4f')} | "
                      f"{fmt(ratio(ours, theirs), '.2f')} | {fmt(ours.get('tflops'), '.1f')} | {fmt(ours.get('gbps'), '.0f')} |")
        md.append("")
    other = [b for b in r["benchmarks"] if b.get("bench") != "cuda_ops"]
    if other:
        md += ["## Other benchmarks", "", "```"] + [json.dumps(b) for b in other] + ["```", ""]
    if r.get("sanitizer"):
        md += ["## compute-sanitizer", "", "| tool | test | result | s | detail |", "|---|---|---|---|---|"]
        md += [f"| {s['tool']} | {s['test']} | {s['result']} | {s['seconds']} | {s['detail'].replace('|', '/')} |"
               for s in r["sanitizer"]]
        md.append("")
    if isinstance(r.get("ncu"), dict) and r["ncu"].get("table"):
        md += ["## Nsight Compute: the hottest kernels of one step", "", r["ncu"]["table"], ""]
    for name, entry in r["sub_checks"].items():
        md += [f"## {name} (bench/gpu/{name}_check.sh)", "", "```", entry["output"].rstrip(), "```", ""]
    for name, text in r["raw_outputs"].items():
        md += [f"## Output of {name}", "", "```", text.rstrip(), "```", ""]
    return "\n".join(md)


def short_table(r):
    c = r["test_counts"]
    print()
    print(f"sd_mpi GPU {r['kind']} ({r['mode']}): {r['device']}, driver {r['driver']}, CUDA {r['cuda']}, "
          f"commit {r['commit']}, {r['total_seconds']} s")
    print(f"{'stage':<22} {'status':<8} {'s':>5}  detail")
    for s in r["stages"]:
        print(f"{s['name'][:22]:<22} {s['status']:<8} {s['seconds']:>5}  {s['detail'][:90]}")
    print(f"tests: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped, {c['not run']} not run")
    for t in r["tests"]:
        if t["result"] == "failed":
            print(f"  FAILED {t['name']}: {t['detail'][:200]}")
    ops = op_rows(r["benchmarks"])
    if ops:
        print(f"{'op':<18} {'case':<38} {'dtype':<5} {'ours ms':>9} {'torch ms':>9} {'ratio':>6} {'TFLOP/s':>8} {'GB/s':>7}")
        for key, ours, theirs in ops:
            print(f"{key[0][:18]:<18} {key[1][:38]:<38} {key[2]:<5} {fmt(ours.get('ms'), '9.4f'):>9} "
                  f"{fmt(theirs.get('ms'), '9.4f'):>9} {fmt(ratio(ours, theirs), '6.2f'):>6} "
                  f"{fmt(ours.get('tflops'), '8.1f'):>8} {fmt(ours.get('gbps'), '7.0f'):>7}")
    for s in r.get("sanitizer", []):
        if s["result"] not in ("clean", "skipped"):
            print(f"  {s['tool']} {s['test']}: {s['result']} {s['detail'][:120]}")
    if isinstance(r.get("ncu"), dict) and r["ncu"].get("table"):
        print(r["ncu"]["table"])
    # Sub-checks that summarise themselves in a table (e2e: ours vs diffusers end to end).
    for entry in r["sub_checks"].values():
        for data in entry["files"].values():
            if isinstance(data, dict) and isinstance(data.get("table"), str):
                print(data["table"])


def write_atomically(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def validate(path):
    """The shape every results file has; one line naming what is wrong, exit status 1."""
    try:
        r = json.load(open(path))
    except (OSError, json.JSONDecodeError) as e:
        print(f"{path}: not a JSON file: {e}")
        return 1
    problems = []
    if r.get("format") != FORMAT or r.get("format_version") != FORMAT_VERSION:
        problems.append(f"format is {r.get('format')!r} v{r.get('format_version')!r}, not {FORMAT!r} v{FORMAT_VERSION}")
    for key, typ in (("stages", list), ("tests", list), ("benchmarks", list), ("test_counts", dict),
                     ("device", str), ("commit", str), ("mode", str)):
        if not isinstance(r.get(key), typ):
            problems.append(f"'{key}' is missing or not a {typ.__name__}")
    for s in r.get("stages", []) if isinstance(r.get("stages"), list) else []:
        if not isinstance(s, dict) or s.get("status") not in STATUSES or not s.get("name"):
            problems.append(f"stage {s!r} has no name or an unknown status")
    if problems:
        print(f"{path}: " + "; ".join(problems))
        return 1
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", help="the window's work folder")
    p.add_argument("--out", help="where results.json and results.md go")
    p.add_argument("--kind", default="window", choices=("window", "deep"))
    p.add_argument("--final", action="store_true", help="print the short table, write results.env")
    p.add_argument("--store", help="also copy the results to STORE/<date>-<device>.json/.md")
    p.add_argument("--validate", metavar="RESULTS_JSON")
    a = p.parse_args()
    if a.validate:
        return validate(a.validate)
    if not a.work or not a.out:
        p.error("give --work and --out (or --validate FILE)")
    record, now = collect(a.work, a.kind)
    os.makedirs(a.out, exist_ok=True)
    base = "results" if a.kind == "window" else "deep"
    write_atomically(os.path.join(a.out, base + ".json"), json.dumps(record, indent=1))
    write_atomically(os.path.join(a.out, base + ".md"), markdown(record, now))
    if a.final:
        short_table(record)
        slug = re.sub(r"[^a-z0-9]+", "-", record["device"].lower()).strip("-") or "unknown-gpu"
        stored = ""
        if a.store:
            os.makedirs(a.store, exist_ok=True)
            stored = os.path.join(a.store, f"{now:%Y-%m-%d}-{slug}" + ("" if a.kind == "window" else "-deep"))
            write_atomically(stored + ".json", json.dumps(record, indent=1))
            write_atomically(stored + ".md", markdown(record, now))
        print(f"results: {os.path.join(a.out, base)}.json, .md" + (f" (also {stored}.json, .md)" if stored else ""))
        print(f"commit them as bench/results/gpu/{now:%Y-%m-%d}-{slug}{'' if a.kind == 'window' else '-deep'}.json/.md")
        c = record["test_counts"]
        bad_stages = sum(1 for s in record["stages"] if s["status"] in ("failed", "timeout", "killed"))
        with open(os.path.join(a.work, "results.env"), "w") as f:
            f.write(f"failed={c['failed']}\nskipped={c['skipped']}\nbad_stages={bad_stages}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
