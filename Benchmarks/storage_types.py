#!/usr/bin/env python3
"""One table of the paper workload's embedding stage for every storage type: Bagel (each variant, all
tables in one launch) next to FBGEMM's TBE (CUDA-graph replay) and torch.nn.EmbeddingBag (fp32), all
from one call on one card, with each type's bytes floor at the copy bandwidth measured in that run.

The floor counts what the memory system must move per lookup on `random` (every row from DRAM): the
32-byte sectors a row touches at its stride (rows laid end to end from an aligned base), the index,
and the pooled output written once per bag. Below it a kernel cannot go; "% floor" = floor / time.

    python3 Benchmarks/storage_types.py --bagel types-*.json --torch torch-types.json [--fbgemm fbgemm.json]
"""
import argparse
import json
import math

# FBGEMM's kernels per storage type (its training TBE for fp32/fp16, inference nbit TBE for the rest);
# where both exist the faster is the peer.
FBGEMM_KERNELS = {"fp32": ["tbe.fp32", "nbit.fp32"], "fp16": ["tbe.fp16", "nbit.fp16"], "int8": ["nbit.int8"],
                  "int4": ["nbit.int4"]}
FBGEMM_DATASET = {"random": "random", "one_item": "one_item", "low": "reuse_low", "medium": "reuse_medium"}


def row_bytes(storage, dim):
    return {"fp32": 4 * dim, "fp16": 2 * dim, "bf16": 2 * dim, "int8": dim + 8, "int4": dim // 2 + 4}[storage]


def sectors_per_row(stride):
    """Mean 32-byte sectors a row of `stride` bytes touches when rows are laid end to end."""
    period = 32 // math.gcd(stride, 32)
    return sum(((r * stride) % 32 + stride + 31) // 32 for r in range(period)) / period


def floor_us(workload, storage, copy_tbps):
    lookups = workload["bags"] * workload["lookups"]
    index_bytes = 8 if str(workload.get("indexWidth", "int64")).endswith("64") else 4
    moved = lookups * (32 * sectors_per_row(row_bytes(storage, workload["dim"])) + index_bytes) \
        + workload["bags"] * workload["dim"] * 4
    return moved / (copy_tbps * 1e12) * 1e6, moved


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bagel", nargs="+", required=True)
    ap.add_argument("--torch")
    ap.add_argument("--fbgemm")
    args = ap.parse_args()
    runs = [json.load(open(p)) for p in args.bagel]
    torch = json.load(open(args.torch)) if args.torch else None
    fb = json.load(open(args.fbgemm)) if args.fbgemm else None
    first = runs[0]
    w = first["workload"]
    copy = first["copyTerabytesPerSecond"]
    print(f"GPU: {first['gpu']}; copy bandwidth {copy:.2f} TB/s (Bagel)"
          + (f", {fb['copy']['TBps_read_plus_write']:.2f} TB/s (FBGEMM's probe, {fb['info']['device']}, "
             f"fbgemm_gpu {fb['info']['fbgemm_gpu']})" if fb else ""))
    print(f"Workload: {w['tables']} tables x {w['rows']} rows x dim {w['dim']}, {w['bags']} bags x {w['lookups']} "
          f"lookups; µs per table, all tables in one launch; FBGEMM replayed from a CUDA graph\n")
    torch_us = {r["dataset"]: r["microseconds"] for r in torch["results"]} if torch else {}
    datasets = []
    for run in runs:
        for r in run["results"]:
            if r["dataset"] not in datasets:
                datasets.append(r["dataset"])
    print("| storage | dataset | Bagel best (variant) | vectorized | FBGEMM | × FBGEMM | floor µs (bytes) | % floor | × torch fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in sorted(runs, key=lambda r: ["fp32", "fp16", "bf16", "int8", "int4"].index(r["workload"]["storage"])):
        storage = run["workload"]["storage"]
        floor, moved = floor_us(run["workload"], storage, run["copyTerabytesPerSecond"])
        for dataset in datasets:
            rows = [r for r in run["results"] if r["dataset"] == dataset and "tables batched" in r["variant"]]
            if not rows:
                continue
            best = min(rows, key=lambda r: r["microseconds"])
            plain = next((r for r in rows if r["knobs"].startswith("vectorized") and "lanes" not in r["knobs"]), None)
            peer = None
            if fb:
                times = [fb["timings"][k][FBGEMM_DATASET.get(dataset, dataset)]["graph_us_per_table"]
                         for k in FBGEMM_KERNELS.get(storage, []) if k in fb["timings"]
                         and FBGEMM_DATASET.get(dataset, dataset) in fb["timings"][k]]
                peer = min(times) if times else None
            t = torch_us.get(dataset)
            name = best["variant"].replace(" (tables batched)", "")
            floor_cells = f"{floor:.1f} ({moved / 1e6:.1f} MB) | {100 * floor / best['microseconds']:.0f}%" \
                if dataset == "random" else "| "
            print(f"| {storage} | {dataset} | {best['microseconds']:.1f} ({name}) | "
                  f"{plain['microseconds']:.1f} | " if plain else f"| {storage} | {dataset} | {best['microseconds']:.1f} ({name}) | - | ",
                  end="")
            print(f"{peer:.1f} | {peer / best['microseconds']:.2f} | " if peer else "- | - | ", end="")
            print(f"{floor_cells} | " + (f"{t / best['microseconds']:.2f}" if t else "-") + " |")
    print()
    print("Every variant (µs per table, all tables in one launch):\n")
    for run in runs:
        storage = run["workload"]["storage"]
        rows = [r for r in run["results"] if "tables batched" in r["variant"]]
        variants = []
        for r in rows:
            if r["variant"] not in variants:
                variants.append(r["variant"])
        print(f"{storage}: " + "; ".join(
            v.replace(" (tables batched)", "") + " " + "/".join(
                f"{r['microseconds']:.1f}" for d in datasets for r in rows if r["variant"] == v and r["dataset"] == d)
            for v in variants) + f"  ({'/'.join(datasets)}; regs " + ",".join(
                str(r["registers"]) for r in rows if r["dataset"] == datasets[0]) + ")")


if __name__ == "__main__":
    main()
