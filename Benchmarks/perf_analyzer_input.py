#!/usr/bin/env python3
"""Writes a perf_analyzer --input-data file for a Bagel model: random requests of --batch samples
with the model's shapes (dense [B, F]; per table indices [B*L] int64, offsets [B+1] int64), the same
requests `bagel loadgen --batch B` sends in kind. Bagel's config says max_batch_size 0, so
perf_analyzer takes every shape from this file.

    python3 Benchmarks/perf_analyzer_input.py MODEL_DIR --batch 64 --requests 16 --out input.json
"""
import argparse
import json
import os
import random

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--batch", type=int, default=64)
parser.add_argument("--requests", type=int, default=16, help="distinct requests (perf_analyzer cycles through them)")
parser.add_argument("--seed", type=int, default=1)
parser.add_argument("--out", required=True)
args = parser.parse_args()

with open(os.path.join(args.model, "model.json")) as f:
    model = json.load(f)
tables = model["tables"]
default_lookups = model.get("lookups_per_table", 1)
rng = random.Random(args.seed)
steps = []
for _ in range(args.requests):
    b = args.batch
    step = {"dense": {"content": [round(rng.gauss(0, 1), 6) for _ in range(b * model["dense_features"])],
                      "shape": [b, model["dense_features"]]}}
    for t, table in enumerate(tables):
        lookups = table.get("multi_hot", default_lookups)
        step[f"indices_{t}"] = {"content": [rng.randrange(table["rows"]) for _ in range(b * lookups)], "shape": [b * lookups]}
        step[f"offsets_{t}"] = {"content": [i * lookups for i in range(b + 1)], "shape": [b + 1]}
    steps.append(step)
with open(args.out, "w") as f:
    json.dump({"data": steps}, f)
print(f"{args.out}: {args.requests} requests of {args.batch} samples, {len(tables)} tables")
