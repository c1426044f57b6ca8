#!/usr/bin/env python3
"""How exact three ways of summing int4 row-wise bags are, in fp32 as the GPU rounds (FMA emulated in fp64), against
an fp64 sum — measured as the doctor measures (error / max(|sum|, 0.1 Σ|wᵢ·valueᵢ|); its bound is ~1e-5):

  old      Σ (w·s)·(n − 8) + Σ w·(b + 8s)               (the kernel as built: PRMT, FADD, FFMA a code)
  nibble   Σ (w·16s)·(1 + n/16) + Σ w·(b − 16s)         (run 91: PRMT, FFMA a code; the offset rides in the sum)
  folded   nibble, with a second accumulator folded into the sum every STEP rows (one FADD a code a step)

Rows as the doctor makes them: scale and bias rounded to fp16, codes uniform, weights in [−0.5, 1.5].

    python3 Benchmarks/int4_rounding.py
"""
import numpy as np

rng = np.random.default_rng(1)
f32 = np.float32


def fma(a, b, c):
    """fp32 fused multiply-add: the product of two fp32 values is exact in fp64, then one rounding to fp32."""
    return f32(np.float64(a) * np.float64(b) + np.float64(c))


def trial(rows, weighted, step=8):
    lo, hi = rng.uniform(-1, 0, rows), rng.uniform(0, 1, rows)
    s = np.float16((hi - lo) / 15).astype(np.float32)
    b = np.float16(lo).astype(np.float32)
    n = rng.integers(0, 16, rows)
    w = (rng.uniform(-0.5, 1.5, rows) if weighted else np.ones(rows)).astype(np.float32)
    values = w.astype(np.float64) * (s.astype(np.float64) * n + b.astype(np.float64))
    exact, magnitude = float(values.sum()), float(np.abs(values).sum())

    acc = bias = f32(0)
    for r in range(rows):
        acc = fma(f32(w[r] * s[r]), f32(n[r] - 8), acc)
        bias = fma(w[r], fma(f32(8), s[r], b[r]), bias)
    old = float(f32(acc + bias))

    acc = bias = f32(0)
    for r in range(rows):
        acc = fma(f32(w[r] * f32(16 * s[r])), f32(1 + n[r] / 16), acc)
        bias = fma(w[r], f32(b[r] - f32(16 * s[r])), bias)
    nibble = float(f32(acc + bias))

    acc = f32(0)
    for first in range(0, rows, step):
        t = c = f32(0)
        for r in range(first, min(rows, first + step)):
            t = fma(f32(w[r] * f32(16 * s[r])), f32(1 + n[r] / 16), t)
            c = fma(w[r], f32(b[r] - f32(16 * s[r])), c)
        acc = f32(acc + f32(t + c))
    folded = float(acc)

    scale = max(abs(exact), 0.1 * magnitude)
    return [abs(x - exact) / scale for x in (old, nibble, folded)]


def main():
    for weighted in (True, False):
        for rows in (203, 150, 40):
            worst = np.array([trial(rows, weighted) for _ in range(300)]).max(axis=0)
            print(f"{'weighted' if weighted else 'unweighted'} bags of {rows}: max error/scale  old {worst[0]:.1e}  "
                  f"nibble {worst[1]:.1e}  folded every 8 rows {worst[2]:.1e}")


if __name__ == "__main__":
    main()
