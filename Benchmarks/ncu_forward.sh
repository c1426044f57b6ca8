#!/usr/bin/env bash
# Per-kernel times of one forward (the bench's last pass, which runs the stages one by one) in each math mode,
# under Nsight Compute without cache flushes or clock control. By default mlperf-v2 (1M-row caps, batch 8192, int8
# tables), bf16 against fp8 (run 53 in docs/PERF.md); PRESET, BATCH, DTYPE and MATHS choose another forward.
# Run by `scripts/gpu-run.sh ncu-forward` (BAGEL: the binary; OUT: where the CSVs go).
set -uo pipefail
NCU=${NCU:-/usr/local/cuda/bin/ncu}
PRESET=${PRESET:-mlperf-v2}
for m in ${MATHS:-bf16 fp8}; do
  name=$PRESET-$m
  "$NCU" --cache-control none --clock-control none --metrics gpu__time_duration.sum --csv --page raw \
    "$BAGEL" bench e2e --preset "$PRESET" --max-rows 1000000 --batch-size "${BATCH:-8192}" --device gpu --math "$m" \
    --dtype "${DTYPE:-int8}" --seconds 0.05 --reference-samples 0 > "$OUT/ncu-forward-$name.csv" 2> "$OUT/ncu-forward-$name.err"
  python3 - "$OUT/ncu-forward-$name.csv" "$name" <<'PY'
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
