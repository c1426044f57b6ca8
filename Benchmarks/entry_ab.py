#!/usr/bin/env python3
"""The embedding kernel's two entry points side by side, from one call: `bench embedding --json ab-<dtype>-<entry>.json`
with entry `weighing` (--weighing-entry: the entry that reads per-sample weights, how every launch ran before) and
`unweighted` (compiled without them). Prints, per storage type, dataset and variant, µs per table under each entry,
the speed-up and the registers each entry takes.

    python3 Benchmarks/entry_ab.py ab-*.json
"""
import json
import os
import re
import sys


def main():
    runs = {}
    for path in sys.argv[1:]:
        m = re.match(r"ab-(\w+)-(weighing|unweighted)\.json$", os.path.basename(path))
        if not m:
            sys.exit(f"{path}: expected ab-<dtype>-<weighing|unweighted>.json")
        runs[(m.group(1), m.group(2))] = json.load(open(path))
    if not runs:
        sys.exit("no results")
    first = next(iter(runs.values()))
    print(f"GPU: {first['gpu']}; µs per table, all tables in one launch\n")
    print("| storage | dataset | variant | weighing entry µs (regs) | unweighted µs (regs) | speed-up |")
    print("|---|---|---|---|---|---|")
    for storage in ["fp32", "fp16", "bf16", "int8", "int4"]:
        old, new = runs.get((storage, "weighing")), runs.get((storage, "unweighted"))
        if not old or not new:
            continue
        before = {(r["dataset"], r["variant"]): r for r in old["results"]}
        for r in new["results"]:
            if "tables batched" not in r["variant"]:
                continue  # the one-table launches bench embedding also times
            b = before.get((r["dataset"], r["variant"]))
            if not b:
                continue
            name = r["variant"].replace(" (tables batched)", "")
            print(f"| {storage} | {r['dataset']} | {name} | {b['microseconds']:.1f} ({b['registers']}) | "
                  f"{r['microseconds']:.1f} ({r['registers']}) | {b['microseconds'] / r['microseconds']:.2f}× |")


if __name__ == "__main__":
    main()
