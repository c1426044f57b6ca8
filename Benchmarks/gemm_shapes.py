#!/usr/bin/env python3
"""The matrix products of one MLPerf DLRM-v2 forward, timed alone through PyTorch (cuBLAS) in fp32, tf32 and
bf16: what the library reaches on these shapes, to compare with Bagel's stage times (docs/PERF.md run 23).

    python3 Benchmarks/gemm_shapes.py [--batch 8192]
"""
import argparse

import torch

SHAPES = [  # (name, in, out): y[batch, out] = x[batch, in] @ W[out, in]^T
    ("cross V (3456→512)", 3456, 512), ("cross W (512→3456)", 512, 3456), ("over 3456→1024", 3456, 1024),
    ("over 1024→1024", 1024, 1024), ("over 1024→512", 1024, 512), ("over 512→256", 512, 256),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8192)
    args = ap.parse_args()
    print(f"GPU {torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}")
    for mode in ["fp32", "tf32", "bf16"]:
        torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
        total_flop, total_s = 0.0, 0.0
        for name, k, n in SHAPES:
            x = torch.randn(args.batch, k, device="cuda", dtype=dtype)
            w = torch.randn(n, k, device="cuda", dtype=dtype)
            b = torch.randn(n, device="cuda", dtype=dtype)
            for _ in range(5):
                torch.nn.functional.linear(x, w, b)
            times = []
            for _ in range(30):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                torch.nn.functional.linear(x, w, b)
                e.record()
                e.synchronize()
                times.append(s.elapsed_time(e) / 1e3)
            t = sorted(times)[len(times) // 2]
            flop = 2.0 * args.batch * k * n
            count = 3 if name.startswith("cross") else 1
            total_flop += count * flop
            total_s += count * t
            print(f"{mode:5s} {name:22s} {t * 1e6:8.1f} µs  {flop / t / 1e12:6.1f} TFLOP/s")
        print(f"{mode:5s} all products of a forward (cross ×3): {total_s * 1e3:.3f} ms, {total_flop / total_s / 1e12:.1f} TFLOP/s")


if __name__ == "__main__":
    main()
