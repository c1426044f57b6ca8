#!/usr/bin/env python3
"""Two Bagel binaries measured in one run on one card (scripts/gpu-run.sh compare-embedding and
compare-e2e): per dataset and variant, each binary's µs per table in every round, the ratio of the
medians new/old and the run-to-run spread of each, with PyTorch (and FBGEMM, when given) on the same
inputs.

    python3 Benchmarks/compare_binaries.py --old old-1.json old-2.json --new new-1.json new-2.json \\
        [--torch torch.json] [--fbgemm fbgemm.json]
    python3 Benchmarks/compare_binaries.py --e2e RESULTS_DIR    # e2e-<preset>-<old|new>-<round>.json
"""
import argparse
import glob
import json
import statistics


def load(paths):
    runs = [json.load(open(p)) for p in paths]
    table = {}
    for run in runs:
        for r in run["results"]:
            table.setdefault((r["dataset"], r["variant"]), []).append(r["microseconds"])
    return runs, table


def spread(values):
    return 100 * (max(values) - min(values)) / statistics.median(values) if len(values) > 1 else 0.0


def embedding(args):
    old_runs, old = load(args.old)
    new_runs, new = load(args.new)
    torch = {}
    if args.torch:
        torch = {r["dataset"]: r["microseconds"] for r in json.load(open(args.torch))["results"]}
    fbgemm = {}  # dataset → variant → µs per table (graph replay when measured, else eager)
    if args.fbgemm:
        for variant, per in json.load(open(args.fbgemm)).get("timings", {}).items():
            for dataset, r in per.items():
                fbgemm.setdefault(dataset.replace("reuse_", ""), {})[variant] = r.get("graph_us_per_table",
                                                                                      r["us_per_table"])
    gpu = new_runs[0]["gpu"]
    copies = [r["copyTerabytesPerSecond"] for r in old_runs + new_runs]
    print(f"GPU: {gpu}; copy bandwidth {min(copies):.2f}–{max(copies):.2f} TB/s over {len(copies)} runs\n")
    print("| dataset | variant | old µs (runs) | new µs (runs) | new/old | spread old/new | × torch (new) |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for key in new:
        if key not in old:
            continue
        o, n = old[key], new[key]
        ratio = statistics.median(n) / statistics.median(o)
        ratios.append(ratio)
        t = torch.get(key[0])
        print(f"| {key[0]} | {key[1]} | {' / '.join('%.1f' % v for v in o)} | {' / '.join('%.1f' % v for v in n)} | "
              f"{ratio:.3f} | {spread(o):.1f}% / {spread(n):.1f}% | {t / statistics.median(n):.2f} |" if t else
              f"| {key[0]} | {key[1]} | {' / '.join('%.1f' % v for v in o)} | {' / '.join('%.1f' % v for v in n)} | "
              f"{ratio:.3f} | {spread(o):.1f}% / {spread(n):.1f}% | - |")
    if ratios:
        print(f"\nnew/old over {len(ratios)} configurations: median {statistics.median(ratios):.3f}, "
              f"range {min(ratios):.3f}–{max(ratios):.3f}")
    if torch:
        print("\ntorch.nn.EmbeddingBag µs/table: " + ", ".join(f"{d} {v:.1f}" for d, v in torch.items()))
    for dataset, variants in fbgemm.items():
        print(f"FBGEMM µs/table on {dataset} (graph replay): " + ", ".join(f"{v} {us:.1f}" for v, us in variants.items()))


def e2e(directory):
    for preset in ["terabyte", "paper"]:
        for binary in ["old", "new"]:
            runs = [json.load(open(f)) for f in sorted(glob.glob(f"{directory}/e2e-{preset}-{binary}-*.json"))]
            if not runs:
                continue
            forward = [r["device_forward_ms"] * 1e3 for r in runs]
            rate = [r["samples_per_second"] for r in runs]
            print(f"{preset:9s} {binary}: device forward {' / '.join('%.1f' % f for f in forward)} µs, "
                  f"predict {' / '.join('%.0f' % r for r in rate)} samples/s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", nargs="*", default=[])
    parser.add_argument("--new", nargs="*", default=[])
    parser.add_argument("--torch")
    parser.add_argument("--fbgemm")
    parser.add_argument("--e2e")
    args = parser.parse_args()
    if args.e2e:
        e2e(args.e2e)
    else:
        embedding(args)


if __name__ == "__main__":
    main()
