#!/usr/bin/env python3
"""Joins `bagel bench embedding --json` and `torch_embedding_bag.py --json` from one run on one card
into a Markdown table: each variant's µs per table, TB/s, % of the copy bandwidth (Bagel's own
measurement in the same run), × baseline and × torch.nn.EmbeddingBag.

    python3 Benchmarks/compare_embedding.py bagel.json torch.json
"""
import json
import sys


def index_name(width):
    """The workload's index type: "int64" (or 64, as binaries before the restructuring wrote it)."""
    return width if isinstance(width, str) else f"int{width}"


def main():
    with open(sys.argv[1]) as f:
        bagel = json.load(f)
    with open(sys.argv[2]) as f:
        torch = json.load(f)
    torch_by_dataset = {r["dataset"]: r for r in torch["results"]}
    print(f"GPU: {bagel['gpu']} (PyTorch saw {torch['gpu']}, torch {torch['torch']}); copy bandwidth "
          f"{bagel['copyTerabytesPerSecond']:.2f} TB/s (Bagel), {torch['copy_terabytes_per_second']:.2f} TB/s (PyTorch)")
    w = bagel["workload"]
    print(f"Workload: {w['tables']} tables x {w['rows']} rows x {w['dim']} {w['storage']}, {w['bags']} bags x "
          f"{w['lookups']} lookups, {index_name(w['indexWidth'])} indices\n")
    datasets = []
    for r in bagel["results"]:
        if r["dataset"] not in datasets:
            datasets.append(r["dataset"])
    for dataset in datasets:
        t = torch_by_dataset.get(dataset)
        print(f"### {dataset}\n")
        print("| variant | µs/table | TB/s | % copy | × baseline | × torch | regs | occupancy | pin µs |")
        print("|---|---|---|---|---|---|---|---|---|")
        if t:
            print(f"| torch.nn.EmbeddingBag | {t['microseconds']:.1f} | {t['terabytes_per_second']:.2f} | "
                  f"{100 * t['terabytes_per_second'] / bagel['copyTerabytesPerSecond']:.0f} | | 1.00 | | | |")
        for r in bagel["results"]:
            if r["dataset"] != dataset:
                continue
            vs_torch = f"{t['microseconds'] / r['microseconds']:.2f}" if t else "-"
            base = f"{r['speedupOverBaseline']:.2f}" if r.get("speedupOverBaseline") else "1.00" if r["variant"] == "baseline" else "-"
            pin = f"{r['pinMicroseconds']:.1f}" if r.get("pinMicroseconds") else ""
            print(f"| {r['variant']} | {r['microseconds']:.1f} | {r['terabytesPerSecond']:.2f} | {r['percentOfCopy']:.0f} | "
                  f"{base} | {vs_torch} | {r['registers']} | {100 * r['occupancy']:.0f}% | {pin} |")
        print()


if __name__ == "__main__":
    main()
