#!/usr/bin/env python3
"""One row per `bagel loadgen` run of a gpu-run.sh serving stage: the client's view (requests/s, p50, p99) beside the
server's own /metrics of the same load (samples a batch, the server's time a request: queueing and engine).

    python3 Benchmarks/serve_summary.py DIR    # reads DIR/load-<name>.json and DIR/metrics-<name>.txt
"""
import glob
import json
import os
import sys


def metrics(path):
    values = {}
    for line in open(path):
        key, _, value = line.strip().rpartition(" ")
        try:
            values[key] = float(value)
        except ValueError:
            pass
    return values


def main():
    out = sys.argv[1]
    print("| load | requests/s | p50 ms | p99 ms | samples a batch (padded) | server ms a request (queue, engine) |")
    print("|---|---|---|---|---|---|")
    for path in sorted(glob.glob(os.path.join(out, "load-*.json"))):
        name = os.path.basename(path)[len("load-"):-len(".json")]
        client = json.load(open(path))
        m = metrics(os.path.join(out, f"metrics-{name}.txt"))
        requests = m.get("bagel_request_seconds_count", 0) or 1
        batches = m.get("bagel_batch_size_count", 0) or 1
        per = lambda key: m.get(key, 0) / requests * 1e3
        print(f"| {name} | {client['requestsPerSecond']:,.0f} | {client['p50'] * 1e3:.2f} | {client['p99'] * 1e3:.2f} | "
              f"{m.get('bagel_batch_size_sum', 0) / batches:.0f} | {per('bagel_request_seconds_sum'):.3f} "
              f"({per('bagel_queue_seconds_sum'):.3f}, {per('bagel_compute_seconds_sum'):.3f}) |")


if __name__ == "__main__":
    main()
