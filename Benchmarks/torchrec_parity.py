#!/usr/bin/env python3
"""TorchRec's DLRM (dot, upper-triangle pairs) and DLRM_DCN (MLPerf DLRM-v2) against Bagel: one checkpoint
written with safetensors.torch.save_file(model.state_dict()), the same inputs, probabilities compared
(GPU and CPU engines, fp32; tf32/bf16 math reported); then TorchRec's eager throughput at the same shapes
next to `bagel bench` on the same model.

    PYTHONPATH=/tmp/fbgemm python3 Benchmarks/torchrec_parity.py --bagel BIN --work DIR --out RESULT.json
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file
from torchrec.models.dlrm import DLRM, DLRM_DCN
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

CARDINALITIES = [40000000, 39060, 17295, 7424, 20265, 3, 7122, 1543, 63, 40000000, 3067956, 405282, 10, 2209, 11938,
                 155, 4, 976, 14, 40000000, 40000000, 40000000, 590152, 12973, 108, 36]
MULTI_HOT = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1]


def build(kind, cap, seed):
    torch.manual_seed(seed)
    dim = 128 if kind == "dcn" else 64
    rows = [min(c, cap) for c in CARDINALITIES]
    tables = [EmbeddingBagConfig(name=f"t_cat_{t}", embedding_dim=dim, num_embeddings=rows[t], feature_names=[f"cat_{t}"])
              for t in range(26)]
    ebc = EmbeddingBagCollection(tables=tables, device=torch.device("cpu"))
    if kind == "dcn":
        model = DLRM_DCN(embedding_bag_collection=ebc, dense_in_features=13, dense_arch_layer_sizes=[512, 256, dim],
                         over_arch_layer_sizes=[1024, 1024, 512, 256, 1], dcn_num_layers=3, dcn_low_rank_dim=512)
        top = [1024, 1024, 512, 256, 1]
    else:
        model = DLRM(embedding_bag_collection=ebc, dense_in_features=13, dense_arch_layer_sizes=[512, 256, dim],
                     over_arch_layer_sizes=[512, 512, 256, 1])
        top = [512, 512, 256, 1]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "crossnet.bias" in name:  # zeros at init would leave the bias untested
                p.normal_(0, 0.05)
    config = {"format": "bagel-dlrm", "version": 1, "name": f"torchrec-{kind}", "dense_features": 13,
              "bottom_mlp": [512, 256, dim],
              "tables": [{"rows": rows[t], "dim": dim, "name": f"t_cat_{t}", "multi_hot": MULTI_HOT[t]} for t in range(26)],
              "interaction": "dcn" if kind == "dcn" else "dot", "top_mlp": top, "weight_names": "torchrec"}
    if kind == "dcn":
        config["dcn"] = {"layers": 3, "low_rank": 512}
    else:
        config["dot_pairs"] = "upper"
    return model.eval(), config, rows


def inputs(rows, samples, seed, fixed=False):
    g = np.random.default_rng(seed)
    dense = g.random((samples, 13), dtype=np.float32) * 3
    lengths = [[MULTI_HOT[t] if fixed else int(g.integers(0, 2 * MULTI_HOT[t] + 1)) for _ in range(samples)]
               for t in range(26)]
    values = [[int(g.integers(0, rows[t])) for _ in range(sum(lengths[t]))] for t in range(26)]
    return dense, lengths, values


def kjt(lengths, values, device):
    return KeyedJaggedTensor.from_lengths_sync(
        keys=[f"cat_{t}" for t in range(26)],
        values=torch.tensor([v for t in values for v in t], dtype=torch.int64, device=device),
        lengths=torch.tensor([n for t in lengths for n in t], dtype=torch.int64, device=device))


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bagel", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=2000, help="row cap of the parity models")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--bench-rows", type=int, default=1000000, help="row cap of the throughput model")
    ap.add_argument("--batches", default="2048,8192")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    result = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "parity": {}, "throughput": {}}
    for kind in ["dlrm", "dcn"]:
        model, config, rows = build(kind, args.rows, seed=7)
        d = os.path.join(args.work, f"parity-{kind}")
        os.makedirs(d, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "weights.safetensors"))
        json.dump(config, open(os.path.join(d, "model.json"), "w"), indent=1)
        dense, lengths, values = inputs(rows, args.samples, seed=11)
        with open(os.path.join(d, "data.jsonl"), "w") as f:
            offsets = [np.concatenate([[0], np.cumsum(lengths[t])]) for t in range(26)]
            for s in range(args.samples):
                sparse = [values[t][offsets[t][s]:offsets[t][s + 1]] for t in range(26)]
                f.write(json.dumps({"dense": [float(x) for x in dense[s]], "sparse": sparse}) + "\n")
        model = model.to(dev)
        with torch.no_grad():
            p = torch.sigmoid(model(torch.from_numpy(dense).to(dev), kjt(lengths, values, dev))).squeeze(1).double().cpu().numpy()
        entry = {}
        for device, math in [("gpu", "fp32"), ("cpu", "fp32"), ("gpu", "tf32"), ("gpu", "bf16")]:
            out = os.path.join(d, f"p-{device}-{math}.txt")
            run([args.bagel, "predict", "--model", d, "--data", os.path.join(d, "data.jsonl"), "--format", "jsonl",
                 "--device", device, "--math", math, "--batch-size", "128", "--out", out])
            got = np.array([float(x) for x in open(out)])
            delta = np.abs(got - p)
            entry[f"{device}-{math}"] = {"max_abs_dp": float(delta.max()), "mean_abs_dp": float(delta.mean())}
            print(f"{kind:5s} bagel {device} {math}: max |Δp| {delta.max():.2e} (mean {delta.mean():.2e}) over {len(p)} samples",
                  flush=True)
        result["parity"][kind] = entry
        del model
        torch.cuda.empty_cache()

    # Throughput at MLPerf DLRM-v2 shapes (tables capped), TorchRec eager vs Bagel, same model file.
    model, config, rows = build("dcn", args.bench_rows, seed=3)
    d = os.path.join(args.work, "bench-dcn")
    os.makedirs(d, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(d, "weights.safetensors"))
    json.dump(config, open(os.path.join(d, "model.json"), "w"), indent=1)
    model = model.to(dev)
    for batch in [int(b) for b in args.batches.split(",")]:
        dense, lengths, values = inputs(rows, batch, seed=batch, fixed=True)
        x, features = torch.from_numpy(dense).to(dev), kjt(lengths, values, dev)
        for precision in ["fp32", "bf16"]:
            def step():
                with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    return model(x, features)
            for _ in range(5):
                step()
            torch.cuda.synchronize()
            times = []
            for _ in range(20):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                step()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            t = float(np.median(times))
            result["throughput"][f"torchrec-{precision}-{batch}"] = {"seconds": t, "pairs_per_second": batch / t}
            print(f"TorchRec DLRM_DCN eager {precision} batch {batch}: {t * 1e3:.2f} ms = {batch / t / 1e6:.2f} M pairs/s",
                  flush=True)
        for math in ["fp32", "tf32", "bf16"]:
            j = os.path.join(args.work, f"bagel-{math}-{batch}.json")
            run([args.bagel, "bench", "--model", d, "--batch-size", str(batch), "--device", "gpu", "--math", math,
                 "--seconds", "2", "--json", j])
            r = json.load(open(j))
            result["throughput"][f"bagel-{math}-{batch}"] = r
            print(f"Bagel {math} batch {batch}: forward {r['device_forward_ms']:.2f} ms = "
                  f"{r['device_samples_per_second'] / 1e6:.2f} M pairs/s (predict {r['samples_per_second'] / 1e6:.2f} M/s); "
                  + ", ".join(f"{s['name']} {s['milliseconds']:.2f}" for s in r.get("stages", [])), flush=True)
    json.dump(result, open(args.out, "w"), indent=1)


if __name__ == "__main__":
    sys.exit(main())
