#!/usr/bin/env bash
# Per-kernel times of one mlperf-v2 forward (1M-row caps, batch 8192, int8 tables; the bench's last pass, which
# runs the stages one by one), bf16 against fp8, under Nsight Compute without cache flushes or clock control.
# Run by `scripts/gpu-run.sh ncu-forward` (BAGEL: the binary; OUT: where the CSVs go). Run 53 in docs/PERF.md.
set -uo pipefail
NCU=${NCU:-/usr/local/cuda/bin/ncu}
for m in ${MATHS:-bf16 fp8}; do
  "$NCU" --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
    "$BAGEL" bench e2e --preset mlperf-v2 --max-rows 1000000 --batch-size 8192 --device gpu --math "$m" --dtype int8 \
    --seconds 0.05 --reference-samples 0 > "$OUT/ncu-forward-$m.csv" 2> "$OUT/ncu-forward-$m.err"
  python3 - "$OUT/ncu-forward-$m.csv" "$m" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 5]
head = rows[0]; ki = head.index("Kernel Name"); ti = head.index("gpu__time_duration.sum")
data = [(r[ki], r[ti]) for r in rows[2:]]
print(f"== {sys.argv[2]}: {len(data)} kernels profiled; units {rows[1][ti]}; the last 40:")
total = 0
for name, t in data[-40:]:
    us = float(t.replace(",", "")) / 1000
    total += us
    print(f"{us:9.1f} us  {name[:110]}")
print(f"sum of the last 40: {total:.1f} us")
PY
done
