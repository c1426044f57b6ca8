#!/usr/bin/env python3
"""Calls a running `bagel serve` with NVIDIA's tritonclient, unmodified — an existing Open Inference
Protocol client — over HTTP (JSON and binary tensors) and gRPC, and checks the probabilities
against `bagel predict --format jsonl` on the same samples.

    bagel serve --model DIR --device cpu &
    python3 Benchmarks/triton_client_check.py --model DIR --name NAME [--http 127.0.0.1:8000] [--grpc 127.0.0.1:8001]

Needs: pip install "tritonclient[http,grpc]" numpy. Exit status 0 when all three paths agree with
`bagel predict` within 1e-6.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def make_inputs(config, batch, rng):
    dense = rng.random((batch, config["dense_features"]), dtype=np.float32)
    lookups = max(config.get("lookups_per_table", 1), 1)
    tables = []
    for t in config["tables"]:
        lengths = rng.integers(0, lookups + 2, size=batch)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = rng.integers(0, t["rows"], size=int(offsets[-1]), dtype=np.int64)
        tables.append((indices, offsets))
    return dense, tables


def tensors(module, dense, tables, binary):
    inputs = []
    def add(name, array, datatype):
        tensor = module.InferInput(name, list(array.shape), datatype)
        if module is httpclient:
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    add("dense", dense, "FP32")
    for t, (indices, offsets) in enumerate(tables):
        add(f"indices_{t}", indices, "INT64")
        add(f"offsets_{t}", offsets, "INT64")
    return inputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="model directory (to read model.json and run bagel predict)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--http", default="127.0.0.1:8000")
    parser.add_argument("--grpc", default="127.0.0.1:8001")
    parser.add_argument("--bagel", default=".build/debug/bagel")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    with open(os.path.join(args.model, "model.json")) as f:
        config = json.load(f)
    dense, tables = make_inputs(config, args.batch, np.random.default_rng(3))

    # The reference: bagel predict on the same samples, as JSON lines.
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "d.jsonl")
        with open(data, "w") as f:
            for s in range(args.batch):
                sparse = [ind[off[s]:off[s + 1]].tolist() for ind, off in tables]
                f.write(json.dumps({"dense": dense[s].tolist(), "sparse": sparse}) + "\n")
        out = os.path.join(work, "p.txt")
        subprocess.run([args.bagel, "predict", "--model", args.model, "--data", data, "--format", "jsonl",
                        "--device", "cpu", "--out", out], check=True, capture_output=True)
        reference = np.loadtxt(out, dtype=np.float32).reshape(-1)

    results = {}
    http = httpclient.InferenceServerClient(url=args.http)
    assert http.is_server_live() and http.is_model_ready(args.name)
    metadata = http.get_model_metadata(args.name)
    for binary in (False, True):
        outputs = [httpclient.InferRequestedOutput("probability", binary_data=binary)]
        response = http.infer(args.name, tensors(httpclient, dense, tables, binary), outputs=outputs)
        results[f"http {'binary' if binary else 'json'}"] = response.as_numpy("probability").reshape(-1)
    grpc = grpcclient.InferenceServerClient(url=args.grpc)
    assert grpc.is_server_live() and grpc.is_model_ready(args.name)
    response = grpc.infer(args.name, tensors(grpcclient, dense, tables, False),
                          outputs=[grpcclient.InferRequestedOutput("probability")])
    results["grpc"] = response.as_numpy("probability").reshape(-1)

    print(f"tritonclient against bagel serve, model {metadata['name']} ({len(metadata['inputs'])} inputs), "
          f"{args.batch} samples")
    ok = True
    for name, values in results.items():
        delta = float(np.max(np.abs(values - reference)))
        good = values.shape == reference.shape and delta <= 1e-6
        ok &= good
        print(f"  {name:12s} max |Δ| vs bagel predict = {delta:.2e}  {'ok' if good else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
