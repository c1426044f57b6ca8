#!/usr/bin/env python3
"""An independent DLRM forward in NumPy (float64), to check Bagel's probabilities.

Reads a Bagel model directory (model.json + weights.safetensors, parsed here without the
safetensors package; facebookresearch/dlrm or TorchRec tensor names) and a Criteo TSV or JSON-lines file
(multi-hot bags), computes the forward of docs/METHOD.md §1 (dot with either pair order, cat, or TorchRec's
DCNv2 cross network), and compares with a file of probabilities written by `bagel predict --out`.

    python3 Benchmarks/reference_forward.py --model DIR --data FILE --predictions P.txt [--format criteo|jsonl]
        [--tolerance 1e-5]

Exit status 0 when every |bagel - reference| <= tolerance, 1 otherwise.
"""
import argparse
import json
import math
import struct
import sys

import numpy as np

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        raw = blob[base + begin : base + end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"]).astype(np.float64)
    return tensors


def read_criteo(path, dense_count, rows):
    dense, sparse, labels = [], [], []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            labelled = len(fields) == 1 + dense_count + len(rows)
            if labelled:
                labels.append(float(fields[0]))
                fields = fields[1:]
            d = []
            for text in fields[:dense_count]:
                value = float(text) if text else 0.0
                d.append(math.log(max(value, 0.0) + 1.0))
            # Bagel feeds the dense features to the model as float32.
            dense.append(np.float32(d))
            s = []
            for t, text in enumerate(fields[dense_count:]):
                s.append(int(text, 16) % rows[t] if text else 0)
            sparse.append(s)
    return np.array(dense, dtype=np.float64), np.array(sparse, dtype=np.int64), labels


def read_mlperf(directory):
    """MLPerf DLRM-v2's multi-hot layout: day_D_dense.npy, day_D_sparse_multi_hot.npz (t.npy per table)."""
    import glob
    import os
    dense_path = sorted(glob.glob(os.path.join(directory, "day_*_dense.npy")))[0]
    prefix = dense_path[: -len("dense.npy")]
    dense = np.load(dense_path).astype(np.float64)
    archive = np.load(prefix + "sparse_multi_hot.npz")
    tables = [archive[str(t)] for t in range(len(archive.files))]
    bags = [[[int(i) for i in table[s]] for table in tables] for s in range(dense.shape[0])]
    return dense, bags


def read_jsonl(path):
    dense, bags = [], []
    with open(path) as f:
        for line in f:
            if line.strip():
                sample = json.loads(line)
                dense.append(np.float32(sample["dense"]))
                bags.append(sample["sparse"])
    return np.array(dense, dtype=np.float64), bags


class Names:
    """Tensor names of the two namings Bagel reads (written here from the PyTorch modules' structure)."""

    def __init__(self, config, tensors):
        naming = config.get("weight_names")
        if naming is None:
            naming = "torchrec" if any(k.startswith("sparse_arch.") for k in tensors) else "dlrm"
        self.torchrec = naming == "torchrec"
        self.tables = [t.get("name", f"t_cat_{i}") for i, t in enumerate(config["tables"])]
        self.top_layers = len(config["top_mlp"])

    def embedding(self, t):
        if self.torchrec:
            return f"sparse_arch.embedding_bag_collection.embedding_bags.{self.tables[t]}.weight"
        return f"emb_l.{t}.weight"

    def bottom(self, k):
        p = f"dense_arch.model._mlp.{k}._linear" if self.torchrec else f"bot_l.{2 * k}"
        return p + ".weight", p + ".bias"

    def top(self, k):
        if not self.torchrec:
            p = f"top_l.{2 * k}"
        elif k == self.top_layers - 1:
            p = "over_arch.model.1"
        else:
            p = f"over_arch.model.0._mlp.{k}._linear"
        return p + ".weight", p + ".bias"


def forward(config, w, dense, bags):
    """bags[s][t] is sample s's list of rows of table t (pooled by sum, or mean)."""
    names = Names(config, w)
    x = dense
    for k in range(len(config["bottom_mlp"])):
        weight, bias = names.bottom(k)
        x = np.maximum(x @ w[weight].T + w[bias], 0.0)
    embeddings = []
    for t, table in enumerate(config["tables"]):
        e = w[names.embedding(t)]
        pooled = np.zeros((len(bags), e.shape[1]))
        for s, sample in enumerate(bags):
            rows = sample[t]
            if rows:
                pooled[s] = e[rows].sum(axis=0)
                if table.get("pooling", "sum") == "mean":
                    pooled[s] /= len(rows)
        embeddings.append(pooled)
    interaction = config.get("interaction", "dot")
    if interaction == "dot":
        T = np.stack([x] + embeddings, axis=1)  # [B, n+1, d]
        Z = T @ T.transpose(0, 2, 1)
        n1 = T.shape[1]
        if config.get("dot_pairs", "lower") == "upper":
            pairs = [(i, j) for i in range(n1) for j in range(i + 1, n1)]
        else:
            pairs = [(i, j) for i in range(n1) for j in range(i)]
        r = np.concatenate([x, Z[:, [p[0] for p in pairs], [p[1] for p in pairs]]], axis=1)
    elif interaction == "dcn":
        x0 = np.concatenate([x] + embeddings, axis=1)
        r = x0
        for l in range(config["dcn"]["layers"]):
            v = w[f"inter_arch.crossnet.V_kernels.{l}"]
            wk = w[f"inter_arch.crossnet.W_kernels.{l}"]
            b = w[f"inter_arch.crossnet.bias.{l}"]
            r = x0 * ((r @ v.T) @ wk.T + b) + r
    else:
        r = np.concatenate([x] + embeddings, axis=1)
    layers = len(config["top_mlp"])
    for k in range(layers):
        weight, bias = names.top(k)
        r = r @ w[weight].T + w[bias]
        if k < layers - 1:
            r = np.maximum(r, 0.0)
    return 1.0 / (1.0 + np.exp(-r[:, 0]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--predictions", required=True)
    parser.add_argument("--format", choices=["criteo", "jsonl", "mlperf"], default="criteo")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()

    with open(f"{args.model}/model.json") as f:
        config = json.load(f)
    weights = read_safetensors(f"{args.model}/weights.safetensors")
    rows = [t["rows"] for t in config["tables"]]
    if args.format == "jsonl":
        dense, bags = read_jsonl(args.data)
    elif args.format == "mlperf":
        dense, bags = read_mlperf(args.data)
    else:
        dense, sparse, _ = read_criteo(args.data, config["dense_features"], rows)
        bags = [[[int(i)] for i in sample] for sample in sparse]  # one-hot Criteo input
    reference = forward(config, weights, dense, bags)
    with open(args.predictions) as f:
        bagel = np.array([float(line) for line in f if line.strip()])
    if bagel.shape != reference.shape:
        print(f"row count differs: bagel {bagel.shape[0]}, reference {reference.shape[0]}")
        return 1
    delta = np.abs(bagel - reference)
    worst = int(np.argmax(delta))
    print(
        f"{len(bagel)} rows: max |bagel - reference| = {delta[worst]:.3e} (row {worst + 1}: "
        f"bagel {bagel[worst]:.9f}, reference {reference[worst]:.9f}); mean {delta.mean():.3e}; "
        f"tolerance {args.tolerance:g}"
    )
    return 0 if delta[worst] <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
