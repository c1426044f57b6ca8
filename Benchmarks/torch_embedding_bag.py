#!/usr/bin/env python3
"""torch.nn.EmbeddingBag on the exact inputs `bagel bench embedding --dump DIR` wrote.

Timed the way Bagel times its kernels: table after table, one forward per table between CUDA
events, the first pass over the tables dropped, the median reported. Also measures the device
copy bandwidth (bytes read + written) in the same process.

    python3 Benchmarks/torch_embedding_bag.py --inputs DIR [--runs 21] [--json OUT]
"""
import argparse
import glob
import json
import os
import statistics
import sys

import numpy as np
import torch


def copy_bandwidth():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n / statistics.median(times)


def run_dataset(folder, runs):
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    if meta["dtype"] not in ("fp32", "fp16", "bf16"):
        sys.exit(f"torch.nn.EmbeddingBag has no {meta['dtype']} form; compare {meta['dtype']} against an fp32 run")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[meta["dtype"]]
    tables, batches = meta["tables"], meta["batches"]
    bags = []
    for t in range(tables):
        bag = torch.nn.EmbeddingBag(meta["rows"], meta["dim"], mode="sum", include_last_offset=True)
        bags.append(bag.to(device="cuda", dtype=dtype).eval())
    offsets = torch.from_numpy(np.fromfile(os.path.join(folder, "offsets.bin"), dtype=np.int64)).cuda()
    indices = [
        [torch.from_numpy(np.fromfile(os.path.join(folder, f"t{t}_b{b}.bin"), dtype=np.int64)).cuda() for b in range(batches)]
        for t in range(tables)
    ]
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.inference_mode():
        for run in range(runs):
            b = run % batches
            for t in range(tables):
                start.record()
                bags[t](indices[t][b], offsets)
                end.record()
                end.synchronize()
                if run > 0:
                    times.append(start.elapsed_time(end) / 1e3)
    seconds = statistics.median(times)
    lookup_bytes = meta["bags"] * meta["lookups"] * meta["dim"] * torch.tensor([], dtype=dtype).element_size()
    del bags, indices
    torch.cuda.empty_cache()
    return {
        "dataset": meta["dataset"],
        "microseconds": seconds * 1e6,
        "p10": float(np.percentile(times, 10)) * 1e6,
        "p90": float(np.percentile(times, 90)) * 1e6,
        "terabytes_per_second": lookup_bytes / seconds / 1e12,
        "runs": len(times),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--json")
    args = parser.parse_args()
    copy = copy_bandwidth()
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name()}: copy bandwidth {copy / 1e12:.2f} TB/s")
    results = []
    for meta in sorted(glob.glob(os.path.join(args.inputs, "*", "meta.json"))):
        r = run_dataset(os.path.dirname(meta), args.runs)
        r["percent_of_copy"] = 100 * r["terabytes_per_second"] * 1e12 / copy
        results.append(r)
        print(f"{r['dataset']:10s} torch.nn.EmbeddingBag {r['microseconds']:8.1f} µs/table "
              f"({r['p10']:.1f}–{r['p90']:.1f}), {r['terabytes_per_second']:.2f} TB/s, {r['percent_of_copy']:.0f}% of copy")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
                       "copy_terabytes_per_second": copy / 1e12, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
