#!/usr/bin/env python3
"""FBGEMM's table-batched embedding (TBE) with its rows in host memory, on the exact inputs
`bagel bench embedding --dump DIR` wrote: the peer of Bagel's host tier.

FBGEMM keeps host-resident tables in unified memory (EmbeddingLocation.MANAGED) and can cache rows in
HBM (MANAGED_CACHING, `cache_load_factor` = the share of rows the cache holds, LRU or LFU, filled as
lookups miss). Bagel places the hottest rows statically from a profile. Same tables, same indices, same
shares; all 12 tables in one TBE forward (FBGEMM's way); µs per table = forward time / tables. The
cache is warmed over every batch of the dataset before timing (its steady state on this traffic).

    python3 Benchmarks/fbgemm_uvm_cache.py --inputs DIR --shares 0.25,0.10 [--runs 21] [--json OUT]
"""
import argparse
import json
import os
import statistics

import numpy as np
import torch

import fbgemm_gpu  # noqa: F401  (loads the TBE ops)
from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
    CacheAlgorithm, ComputeDevice, EmbeddingLocation, PoolingMode)
from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen


def load(folder):
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    assert meta["dtype"] == "fp32", "this script times fp32 tables"
    tables, batches = meta["tables"], meta["batches"]
    offsets = np.fromfile(os.path.join(folder, "offsets.bin"), dtype=np.int64)
    steps = []
    for b in range(batches):
        idx = [np.fromfile(os.path.join(folder, f"t{t}_b{b}.bin"), dtype=np.int64) for t in range(tables)]
        # TBE's layout: indices of every table concatenated, offsets per (table, bag) + 1.
        cat_offsets = np.concatenate([offsets[:-1] + t * offsets[-1] for t in range(tables)] + [[tables * offsets[-1]]])
        steps.append((torch.from_numpy(np.concatenate(idx)).cuda(), torch.from_numpy(cat_offsets).cuda()))
    return meta, steps


def timed(tbe, steps, runs):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    with torch.inference_mode():
        for run in range(runs):
            indices, offsets = steps[run % len(steps)]
            start.record()
            tbe(indices, offsets)
            end.record()
            end.synchronize()
            if run > 0:
                times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times), np.percentile(times, 10), np.percentile(times, 90)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--shares", default="0.25,0.10")
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--json")
    args = parser.parse_args()
    results = []
    for dataset in sorted(os.listdir(args.inputs)):
        folder = os.path.join(args.inputs, dataset)
        if not os.path.exists(os.path.join(folder, "meta.json")):
            continue
        meta, steps = load(folder)
        tables, rows, dim = meta["tables"], meta["rows"], meta["dim"]
        configs = [("device", EmbeddingLocation.DEVICE, None, None), ("managed (UVM, no cache)", EmbeddingLocation.MANAGED, None, None)]
        for share in [float(s) for s in args.shares.split(",")]:
            for algorithm in (CacheAlgorithm.LRU, CacheAlgorithm.LFU):
                configs.append((f"managed caching {algorithm.name} {share:.0%}", EmbeddingLocation.MANAGED_CACHING, share, algorithm))
        print(f"== {dataset}: {tables} tables × {rows} × {dim} fp32, {meta['bags']} bags × {meta['lookups']}")
        for name, location, share, algorithm in configs:
            kwargs = dict(cache_load_factor=share, cache_algorithm=algorithm) if share is not None else {}
            tbe = SplitTableBatchedEmbeddingBagsCodegen(
                [(rows, dim, location, ComputeDevice.CUDA) for _ in range(tables)], optimizer=EmbOptimType.EXACT_SGD,
                weights_precision=SparseType.FP32, output_dtype=SparseType.FP32, pooling_mode=PoolingMode.SUM, **kwargs)
            tbe.eval()
            with torch.inference_mode():
                for indices, offsets in steps * 2:  # warm the cache on every batch, twice
                    tbe(indices, offsets)
            torch.cuda.synchronize()
            median, p10, p90 = timed(tbe, steps, args.runs)
            per_table = median / tables
            print(f"  {name:34s} {per_table:9.1f} µs/table  ({p10 / tables:.1f}–{p90 / tables:.1f})")
            results.append(dict(dataset=dataset, variant=name, share=share, microseconds_per_table=per_table,
                                p10=p10 / tables, p90=p90 / tables))
            del tbe
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(gpu=torch.cuda.get_device_name(), results=results), f, indent=1)


if __name__ == "__main__":
    main()
