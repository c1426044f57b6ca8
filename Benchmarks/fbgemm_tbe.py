#!/usr/bin/env python3
"""FBGEMM's table-batched embedding bags (TBE) on the exact inputs `bagel bench embedding --dump DIR` wrote.

`fbgemm_anchor.py` (../shared/tools/fbgemm) times TBE on the paper's one shape (2048 bags of 150 lookups). This times
it on whatever shape Bagel's bench ran — bags of 1, 20 or 100 lookups as DLRM-v2's multi-hot tables have, another
batch or row count — with the very indices Bagel's kernels read: every table of a dataset in one TBE call, replayed
from a CUDA graph, median of --iters, reported per table (total / tables). Kernels per storage type as the anchor:
the training TBE for fp32 and fp16 rows, the inference (nbit) TBE for int8 and int4 (FBGEMM's fused rows: codes,
then an fp16 scale and bias). Each variant's output is checked against torch's embedding_bag on the same (rounded or
dequantised) weights. The JSON has the anchor's layout ("timings"[variant][dataset]["graph_us_per_table"], datasets
low and medium named reuse_low and reuse_medium), so `storage_types.py --fbgemm` and `compare_binaries.py` read it.

    python3 Benchmarks/fbgemm_tbe.py --inputs DIR --out fbgemm.json [--variants tbe.fp32,tbe.fp16,nbit.int8,nbit.int4]

Needs fbgemm_gpu on PYTHONPATH (../shared/tools/fbgemm/on-device.sh) and a GPU.
"""
import argparse
import glob
import json
import os
import statistics

import numpy as np
import torch
import torch.nn.functional as F

ANCHOR_DATASET = {"low": "reuse_low", "medium": "reuse_medium"}


def parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--inputs", required=True, help="the folder `bagel bench embedding --dump` wrote")
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=21)
    ap.add_argument("--variants", default="tbe.fp32,tbe.fp16,nbit.int8,nbit.int4")
    return ap.parse_args()


def median_ms(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graph_replay(fn):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph


def copy_bandwidth():
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    return 2 * n / (median_ms(lambda: b.copy_(a), 11) / 1e3) / 1e12


def load(folder):
    """The dataset's meta, its offsets (shared by the tables) and each table's indices (the dump's first batch)."""
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    offsets = np.fromfile(os.path.join(folder, "offsets.bin"), dtype=np.int64)
    indices = [np.fromfile(os.path.join(folder, f"t{t}_b0.bin"), dtype=np.int64) for t in range(meta["tables"])]
    for t, idx in enumerate(indices):
        if len(idx) != offsets[-1] or len(offsets) != meta["bags"] + 1:
            raise SystemExit(f"{folder}: table {t} has {len(idx)} indices, offsets end at {offsets[-1]} "
                             f"for {len(offsets) - 1} bags (meta says {meta['bags']})")
        if len(idx) and (idx.min() < 0 or idx.max() >= meta["rows"]):
            raise SystemExit(f"{folder}: table {t} has an index outside 0..<{meta['rows']}")
    return meta, offsets, indices


def quantize_rows(w, bits):
    """Row-wise asymmetric codes with fp16 scale and bias, FBGEMM's nbit layout (element 2j in the low nibble)."""
    lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    scale = ((hi - lo) / (2 ** bits - 1)).clamp_min(1e-8).half()
    bias = lo.half()
    q = torch.round((w - bias.float()) / scale.float()).clamp(0, 2 ** bits - 1).to(torch.uint8)
    values = q.float() * scale.float() + bias.float()
    if bits == 4:
        q = q[:, 0::2] | (q[:, 1::2] << 4)
    return q, torch.cat([scale, bias], 1).contiguous().view(torch.uint8), values


def main():
    args = parse()
    import fbgemm_gpu  # noqa: F401  (registers the TBE ops)
    from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (BoundsCheckMode, ComputeDevice,
                                                                      EmbeddingLocation, PoolingMode)
    from fbgemm_gpu.split_table_batched_embeddings_ops_inference import IntNBitTableBatchedEmbeddingBagsCodegen
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import SplitTableBatchedEmbeddingBagsCodegen

    variants = [v for v in args.variants.split(",") if v]
    copy = copy_bandwidth()
    info = {"torch": torch.__version__, "fbgemm_gpu": getattr(fbgemm_gpu, "__version__", "?"),
            "device": torch.cuda.get_device_name(), "inputs": os.path.abspath(args.inputs), "iters": args.iters}
    results = {"info": info, "copy": {"TBps_read_plus_write": copy}, "timings": {}, "correctness": {}, "errors": {}}
    print(f"FBGEMM {info['fbgemm_gpu']} on {info['device']}: copy bandwidth {copy:.2f} TB/s")
    folders = sorted(os.path.dirname(m) for m in glob.glob(os.path.join(args.inputs, "*", "meta.json")))
    if not folders:
        raise SystemExit(f"{args.inputs}: no dataset folders (meta.json) — run bagel bench embedding --dump first")
    for folder in folders:
        meta, offsets, indices = load(folder)
        tables, rows, dim, bags = meta["tables"], meta["rows"], meta["dim"], meta["bags"]
        dataset = ANCHOR_DATASET.get(meta["dataset"], meta["dataset"])
        # TBE takes every table's indices back to back and tables × bags + 1 offsets.
        lengths = np.diff(offsets)
        all_offsets = np.concatenate([[0], np.cumsum(np.tile(lengths, tables))]).astype(np.int64)
        tbe_indices = torch.from_numpy(np.concatenate(indices)).cuda()
        tbe_offsets = torch.from_numpy(all_offsets).cuda()
        per_table = [torch.from_numpy(i).cuda() for i in indices]
        bag_offsets = torch.from_numpy(offsets[:-1].copy()).cuda()
        generator = torch.Generator(device="cuda").manual_seed(1)
        weights = [torch.rand(rows, dim, device="cuda", generator=generator) * 2 - 1 for _ in range(tables)]

        def reference(ws):
            return torch.cat([F.embedding_bag(per_table[t], ws[t], bag_offsets, mode="sum") for t in range(tables)], 1)

        def record(variant, call, ws):
            out = call()
            if out.shape != (bags, tables * dim):
                raise RuntimeError(f"output {tuple(out.shape)}, expected {(bags, tables * dim)}")
            expected = reference(ws)
            difference = (out.float() - expected).abs().max().item()
            graph = graph_replay(call)
            ms = median_ms(graph.replay, args.iters)
            results["timings"].setdefault(variant, {})[dataset] = {"graph_us_per_table": ms * 1e3 / tables,
                                                                   "lookups": int(offsets[-1]), "bags": bags}
            results["correctness"].setdefault(variant, {})[dataset] = {
                "max_abs_diff": difference, "reference_max_abs": expected.abs().max().item()}
            print(f"{variant:10s} {dataset:13s} {ms * 1e3 / tables:8.1f} µs/table (graph)  max|diff| {difference:.1e}",
                  flush=True)
            del graph

        with torch.no_grad():
            for variant in variants:
                try:
                    kind, precision = variant.split(".")
                    if kind == "tbe":
                        sparse = {"fp32": SparseType.FP32, "fp16": SparseType.FP16}[precision]
                        tbe = SplitTableBatchedEmbeddingBagsCodegen(
                            [(rows, dim, EmbeddingLocation.DEVICE, ComputeDevice.CUDA) for _ in range(tables)],
                            optimizer=EmbOptimType.EXACT_SGD, weights_precision=sparse,
                            output_dtype=SparseType.FP32, pooling_mode=PoolingMode.SUM, device=torch.device("cuda"),
                            bounds_check_mode=BoundsCheckMode.NONE)
                        tbe.eval()
                        stored = []
                        for t, w in enumerate(tbe.split_embedding_weights()):
                            w.data.copy_(weights[t].to(w.dtype))
                            stored.append(w.float())
                    else:
                        bits = {"int8": 8, "int4": 4}[precision]
                        sparse = {8: SparseType.INT8, 4: SparseType.INT4}[bits]
                        tbe = IntNBitTableBatchedEmbeddingBagsCodegen(
                            [(f"t{t}", rows, dim, sparse, EmbeddingLocation.DEVICE) for t in range(tables)],
                            pooling_mode=PoolingMode.SUM, device=torch.device("cuda"),
                            bounds_check_mode=BoundsCheckMode.NONE, output_dtype=SparseType.FP32,
                            indices_dtype=torch.int64)
                        tbe.initialize_weights()
                        stored = []
                        for t, (codes, scale_bias) in enumerate(tbe.split_embedding_weights(split_scale_shifts=True)):
                            q, sb, values = quantize_rows(weights[t], bits)
                            codes.copy_(q)
                            scale_bias.copy_(sb)
                            stored.append(values)
                    record(variant, lambda: tbe(tbe_indices, tbe_offsets), stored)
                    del tbe, stored
                except Exception as error:  # noqa: BLE001  (one variant's failure is reported, the rest run)
                    results["errors"][f"{variant} {dataset}"] = repr(error)[:400]
                    print(f"ERROR {variant} {dataset}: {error!r}"[:400], flush=True)
                torch.cuda.empty_cache()
        del weights, tbe_indices, per_table
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
