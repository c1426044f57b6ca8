#!/usr/bin/env bash
# Runs Bagel's GPU checks and benchmarks on a GPU machine that has no Swift toolchain, from the
# repository root, with the static binary built here (scripts/build-static.sh → dist/bagel.xz)
# and the access traces in .gpu/data. Everything it measures goes to $OUT (default ./gpu-out).
#
#   scripts/gpu-run.sh STAGE...     stages: env doctor doctor-quick embedding embedding-5m int8 storage-types entry-ab mlperf-lanes e2e-default precision fp8 ncu-forward interaction-probe linear-probe row-layout-probe mlp-probe forward-ab forward-math mlperf-v1-multihot dense-ab torch-dcn mlperf-full-int8 sgemm-ceiling host-pipeline host-read terabyte-ab mlperf-variants serve-p99 serve-ab serve-cores serve-window sweep ncu e2e e2e-host serve
#                                   serving-tools tiers tiers-fbgemm predict predict-prefetch
#                                   doctor-old compare-embedding compare-e2e fbgemm torchrec mlperf
#                                   nccl shard-scaling shard-overlap shard-ranks shard-serve shard-full   (several GPUs; NCCL_NVLS_ENABLE=0)
#
# The doctor-old and compare-* stages run a previous binary (.gpu/bagel-old.xz, e.g. main before a
# change) next to this one in the same call; fbgemm times FBGEMM's TBE on the same workload (after
# ../shared/tools/fbgemm/on-device.sh, with fbgemm_anchor.py copied to .gpu/fbgemm). A path carried in one
# device call is gone in the next: carry .fbgemm/c1 and .fbgemm/c2 in two calls that copy them to /tmp, and in
# the third (with .fbgemm/c3) copy them back into .fbgemm before on-device.sh (runs 81–82).
#
# Every stage logs to <results>/<stage>.txt; JSON results sit beside them; at the end everything is
# packed into $OUT/results.tgz (the device tool returns at most 8 files). The PyTorch baselines and
# the copy-bandwidth probe run in the same call, on the same card.
set -uo pipefail
FINAL=${OUT:-$PWD/gpu-out}
OUT=/tmp/bagel-results
rm -rf "$OUT"
mkdir -p "$OUT" "$FINAL"
unpack() {  # $1 = .xz file, $2 = binary: unpacked once per machine
    if [ ! -x "$2" ] && [ -f "$1" ]; then
        python3 -c "import lzma,shutil; shutil.copyfileobj(lzma.open('$1'), open('$2','wb'))" && chmod +x "$2"
    fi
}
BAGEL=/tmp/bagel
OLD=/tmp/bagel-old
BATCHES=${BATCHES:-2048,8192}
unpack dist/bagel.xz $BAGEL
unpack .gpu/bagel-old.xz $OLD
PREV=/tmp/bagel-prev  # the commit before a change, for same-call A/B stages (.gpu/bagel-prev.xz)
unpack .gpu/bagel-prev.xz $PREV
export BAGEL_KERNEL_CACHE=${BAGEL_KERNEL_CACHE:-$PWD/.gpu/kcache}
export PYTHONUNBUFFERED=1
TRACES=.gpu/data
WORK=/tmp/bagel-work
mkdir -p $WORK

stage_env() {
    nvidia-smi
    nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv
    python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    ls /usr/local/cuda/lib64 2>/dev/null | grep -E "nvrtc|cublasLt" || true
    $BAGEL --help | head -20
}

stage_doctor() { $BAGEL doctor --json "$OUT/doctor.json"; }
stage_doctor-old() { $OLD doctor --json "$OUT/doctor-old.json"; }

# This binary against the previous one on the paper workload, alternating old/new, with PyTorch on the
# same inputs and the copy bandwidth (each bench run measures it).
stage_compare-embedding() {
    local datasets=${DATASETS:-random,one_item,low,medium}
    local variants=${VARIANTS:-baseline,rpf,combined,vectorized,bagel}
    rm -rf $WORK/inputs-compare
    for round in 1 2; do
        for bin in ${ORDER:-old new}; do
            local exe=$BAGEL dump=""
            [ $bin = old ] && exe=$OLD
            [ $bin = new ] && [ $round = 1 ] && dump="--dump $WORK/inputs-compare"
            $exe bench embedding --traces $TRACES --datasets $datasets --variants $variants --runs "${RUNS:-21}" \
                --table-batched --json "$OUT/compare-$bin-$round.json" $dump ${CMP_DTYPE:+--dtype $CMP_DTYPE}
        done
    done
    python3 Benchmarks/torch_embedding_bag.py --inputs $WORK/inputs-compare --json "$OUT/torch-compare.json" \
        --runs "${RUNS:-21}"
    # torch has no int8/int4 EmbeddingBag: no torch-compare.json then.
    local torch=""
    [ -f "$OUT/torch-compare.json" ] && torch="--torch $OUT/torch-compare.json"
    python3 Benchmarks/compare_binaries.py --old "$OUT"/compare-old-*.json --new "$OUT"/compare-new-*.json \
        $torch ${FBGEMM_JSON:+--fbgemm $FBGEMM_JSON} | tee "$OUT/compare-embedding.md"
}

# The forward end to end (terabyte and paper presets), this binary and the previous one alternating.
stage_compare-e2e() {
    for round in 1 2; do
        for bin in old new; do
            local exe=$BAGEL
            [ $bin = old ] && exe=$OLD
            $exe bench e2e --preset terabyte --max-rows 1000000 --batch-size 2048 --device gpu --seconds 3 \
                --json "$OUT/e2e-terabyte-$bin-$round.json"
            $exe bench e2e --preset paper --batch-size 2048 --device gpu --seconds 3 --variant vectorized \
                --dataset medium --traces $TRACES --json "$OUT/e2e-paper-$bin-$round.json"
        done
    done
    python3 Benchmarks/compare_binaries.py --e2e "$OUT"
}

stage_fbgemm() {
    python3 .gpu/fbgemm/fbgemm_anchor.py --traces $TRACES --out "$OUT/fbgemm.json"
}

# MLPerf DLRM-v2 shapes (tables capped, random weights) in every math mode and two batch sizes.
stage_mlperf() {
    for batch in ${BATCHES//,/ }; do
        for math in fp32 tf32 bf16; do
            $BAGEL bench e2e --preset mlperf-v2 --max-rows "${BENCH_ROWS:-1000000}" --batch-size $batch --device gpu \
                --math $math --seconds 3 --json "$OUT/mlperf-$math-$batch.json"
        done
    done
}

# TorchRec DLRM / DLRM_DCN checkpoints through Bagel (GPU and CPU) and TorchRec's eager throughput at
# MLPerf DLRM-v2 shapes next to `bagel bench` on the same model (needs TorchRec: see fbgemm).
stage_torchrec() {
    python3 Benchmarks/torchrec_parity.py --bagel $BAGEL --work $WORK/torchrec --out "$OUT/torchrec.json" \
        --bench-rows "${BENCH_ROWS:-1000000}" --batches "${BATCHES:-2048,8192}"
}

# The host tier (issue 11): the paper workload with a share of each table's bytes in HBM (the dataset's
# hottest rows) and the rest in pinned host memory, against all in HBM and all on the host, with the
# link bandwidth measured in the same run; then the engine end to end at mlperf-v2 shapes (1M-row caps)
# with budgets, rows picked from the benchmark's own traffic.
stage_tiers() {
    $BAGEL bench embedding --traces $TRACES --datasets ${DATASETS:-random,medium,low} \
        --variants vectorized,vectorized:tier=host --hbm-budget ${SHARES:-25%,10%,0%} --runs "${RUNS:-21}" \
        --json "$OUT/tiers-embedding.json"
    for budget in all 50% 25%; do
        local flag=""
        [ $budget != all ] && flag="--hbm-budget $budget"
        $BAGEL bench e2e --preset mlperf-v2 --max-rows "${BENCH_ROWS:-1000000}" --batch-size 8192 --device gpu \
            --variant vectorized --dataset ${E2E_DATASET:-high} --seconds 3 $flag --json "$OUT/tiers-mlperf-${budget%\%}.json"
    done
}

# The host tier next to FBGEMM's UVM-backed TBE (managed memory, with and without its HBM cache) on
# the same dumped inputs and shares, same run (needs FBGEMM: see fbgemm).
stage_tiers-fbgemm() {
    rm -rf $WORK/inputs-tiers
    $BAGEL bench embedding --traces $TRACES --datasets ${DATASETS:-random,medium,low} \
        --variants vectorized,vectorized:tier=host --hbm-budget ${SHARES:-25%,10%,0%} --runs "${RUNS:-21}" \
        --dump $WORK/inputs-tiers --json "$OUT/tiers-embedding.json"
    python3 Benchmarks/fbgemm_uvm_cache.py --inputs $WORK/inputs-tiers --shares ${FBGEMM_SHARES:-0.25,0.10} \
        --runs "${RUNS:-21}" --json "$OUT/fbgemm-uvm.json" 2>&1 | grep -v -i -e compat -e '\[0m'
}

stage_doctor-quick() { $BAGEL doctor --quick --json "$OUT/doctor.json"; }

embedding_run() {  # $1 = label, then extra arguments for bench embedding
    local label=$1; shift
    rm -rf $WORK/inputs-$label
    $BAGEL bench embedding --traces $TRACES --dump $WORK/inputs-$label --json "$OUT/bagel-$label.json" \
        --plot "$OUT/embedding-$label.svg" "$@"
    python3 Benchmarks/torch_embedding_bag.py --inputs $WORK/inputs-$label --json "$OUT/torch-$label.json" \
        --runs "${RUNS:-21}"
    python3 Benchmarks/compare_embedding.py "$OUT/bagel-$label.json" "$OUT/torch-$label.json" | tee "$OUT/compare-$label.md"
    rm -rf $WORK/inputs-$label
}

stage_embedding() {
    embedding_run 500k --datasets "${DATASETS:-random,one_item,low,medium,high}" --variants "${VARIANTS:-all}" \
        --runs "${RUNS:-21}" --table-batched --verify ${AUTOTUNE:+--autotune}
}

stage_embedding-5m() {
    embedding_run 5m --rows 5000000 --datasets random --variants "${VARIANTS_5M:-baseline,vectorized,bagel,vectorized:split=2}" \
        --runs "${RUNS:-21}" --table-batched
}

# Every storage type (fp32, fp16, int8, int4) on Bagel's kernels with lane counts, next to FBGEMM's TBE
# timed in the same call (fbgemm.json from the fbgemm stage, run first) and PyTorch fp32 on the same
# inputs; Benchmarks/storage_types.py prints the table with each type's bytes floor.
# BENCH_SHAPE: extra bench embedding arguments (e.g. "--bags 8192 --lookups 20": DLRM-v2's multi-hot bags).
stage_storage-types() {
    local variants=${STORAGE_VARIANTS:-vectorized,vectorized:lanes=16,vectorized:lanes=8,vectorized:lanes=8,unroll=4,vectorized:lanes=4,unroll=4}
    for dtype in ${DTYPES:-fp32 fp16 int8 int4}; do
        local dump=""
        [ $dtype = fp32 ] && { rm -rf $WORK/inputs-types; dump="--dump $WORK/inputs-types"; }
        $BAGEL bench embedding --dtype $dtype --traces $TRACES --datasets "${DATASETS:-random,one_item,low,medium}" \
            --variants "$variants" --runs "${RUNS:-21}" --table-batched --verify --json "$OUT/types-$dtype.json" $dump \
            ${BENCH_SHAPE:-}
    done
    python3 Benchmarks/torch_embedding_bag.py --inputs $WORK/inputs-types --json "$OUT/torch-types.json" --runs "${RUNS:-21}"
    # FBGEMM_TBE=1: FBGEMM's TBE timed on these very inputs (any BENCH_SHAPE), in place of the paper-shape anchor.
    local fbgemm=${FBGEMM_JSON:-}
    if [ "${FBGEMM_TBE:-0}" = 1 ]; then
        python3 Benchmarks/fbgemm_tbe.py --inputs $WORK/inputs-types --out "$OUT/fbgemm-tbe.json" --iters "${RUNS:-21}"
        fbgemm=$OUT/fbgemm-tbe.json
    fi
    python3 Benchmarks/storage_types.py --bagel "$OUT"/types-*.json --torch "$OUT/torch-types.json" \
        ${fbgemm:+--fbgemm $fbgemm} | tee "$OUT/storage-types.md"
}

# The embedding kernel's two entries in one call (issue 13, run 86): every storage type with the entry that reads
# per-sample weights (--weighing-entry, how every launch ran before) and the entry without them, alternating which
# goes first, next to FBGEMM (fbgemm.json from the fbgemm stage) and PyTorch fp32 on the same inputs.
stage_entry-ab() {
    local variants=${AB_VARIANTS:-vectorized,vectorized:lanes=8,vectorized:lanes=8,unroll=4}
    local n=0
    for dtype in ${DTYPES:-fp32 fp16 int8 int4}; do
        local order="weighing unweighted"
        [ $((n % 2)) = 1 ] && order="unweighted weighing"
        n=$((n + 1))
        for entry in $order; do
            local flag="" dump=""
            [ $entry = weighing ] && flag=--weighing-entry
            [ $dtype = fp32 ] && [ $entry = unweighted ] && { rm -rf $WORK/inputs-types; dump="--dump $WORK/inputs-types"; }
            $BAGEL bench embedding --dtype $dtype --traces $TRACES --datasets "${DATASETS:-random,one_item,low,medium}" \
                --variants "$variants" --runs "${RUNS:-21}" --table-batched --verify --json "$OUT/ab-$dtype-$entry.json" \
                $flag $dump
        done
    done
    python3 Benchmarks/torch_embedding_bag.py --inputs $WORK/inputs-types --json "$OUT/torch-types.json" --runs "${RUNS:-21}"
    python3 Benchmarks/storage_types.py --bagel "$OUT"/ab-*-unweighted.json --torch "$OUT/torch-types.json" \
        ${FBGEMM_JSON:+--fbgemm $FBGEMM_JSON} | tee "$OUT/storage-types.md"
    python3 Benchmarks/entry_ab.py "$OUT"/ab-*.json | tee "$OUT/entry-ab.md"
}

# The mlperf-v2 forward (1M-row caps, batch 8192, bf16 math) with each storage type and lane count: the
# multi-hot bags (1 to 100 lookups) are the stage the lanes knob may move.
stage_mlperf-lanes() {
    mlperf_variants mlperf "${DTYPES_E2E:-fp32 int8 int4}" "${E2E_VARIANTS:-vectorized vectorized:lanes=16 vectorized:lanes=8,unroll=4}"
}

# bench e2e on mlperf-v2 (1M-row caps by default, batch 8192, --math ${MATH:-bf16}) for each of the dtypes in $2
# and variants in $3, results in $OUT/$1-<dtype>-<variant>.json.
mlperf_variants() {
    local prefix=$1
    for dtype in $2; do
        for variant in $3; do
            $BAGEL bench e2e --preset mlperf-v2 --max-rows "${BENCH_ROWS:-1000000}" --batch-size 8192 --device gpu \
                --math ${MATH:-bf16} --dtype $dtype --variant $variant --seconds 2 \
                --json "$OUT/$prefix-$dtype-${variant//[:,=]/_}.json"
        done
    done
}

# The planner's shape-aware default (`auto`) against the variant as named, same call: terabyte (dim 64,
# one-hot) in exact fp32 at 2048 and 16384, and mlperf-v2 (bags of 1-100) in bf16 with fp32/int8/int4 tables.
stage_e2e-default() {
    for round in 1 2; do
        for variant in auto vectorized; do
            for batch in 2048 16384; do
                $BAGEL bench e2e --preset terabyte --max-rows 1000000 --batch-size $batch --device gpu --seconds 2 \
                    --variant $variant --json "$OUT/terabyte-$variant-$batch-$round.json"
            done
        done
    done
    mlperf_variants mlperf "fp32 int8 int4" "auto vectorized:lanes=8,unroll=4"
}

# Every math mode × table storage at mlperf-v2 shapes (1M-row caps, batch 8192), each with its error against
# the fp32 CPU reference (`bench` prints it); then the full-size model with int4 tables.
stage_precision() {
    for dtype in fp32 int8 int4; do
        for math in fp32 tf32 bf16; do
            $BAGEL bench e2e --preset mlperf-v2 --max-rows "${BENCH_ROWS:-1000000}" --batch-size 8192 --device gpu \
                --math $math --dtype $dtype --seconds 2 --json "$OUT/precision-$dtype-$math.json"
        done
    done
    $BAGEL bench e2e --preset mlperf-v2 --max-rows 40000000 --batch-size 8192 --device gpu --math bf16 --dtype int4 \
        --seconds 3 --json "$OUT/precision-full-int4-bf16.json"
}

# fp8 math against bf16 at mlperf-v2 shapes (1M caps, batch 8192), alternating, two rounds, each with its error
# against the fp32 CPU reference; fp8 without the tensor cores' fast accumulation; the full-size model with int8
# tables under fp8; terabyte (dot interaction) at 2048 under fp32, bf16 and fp8.
stage_fp8() {
    for round in 1 2; do
        for case in ${FP8_CASES:-bf16:int8 fp8:int8 bf16:fp32 fp8:fp32 bf16:int4 fp8:int4}; do
            $BAGEL bench e2e --preset mlperf-v2 --max-rows "${BENCH_ROWS:-1000000}" --batch-size 8192 --device gpu \
                --math ${case%%:*} --dtype ${case##*:} --seconds 2 --json "$OUT/fp8-${case/:/-}-$round.json"
        done
    done
    BAGEL_FP8_FAST_ACCUM=0 $BAGEL bench e2e --preset mlperf-v2 --max-rows "${BENCH_ROWS:-1000000}" --batch-size 8192 \
        --device gpu --math fp8 --dtype int8 --seconds 2 --json "$OUT/fp8-exactacc-int8-1.json"
    $BAGEL bench e2e --preset mlperf-v2 --max-rows 40000000 --batch-size 8192 --device gpu --math fp8 --dtype int8 \
        --seconds 3 --json "$OUT/fp8-full-int8-1.json"
    for math in fp32 bf16 fp8; do
        $BAGEL bench e2e --preset terabyte --max-rows 1000000 --batch-size 2048 --device gpu --math $math --seconds 2 \
            --json "$OUT/fp8tb-$math-fp32-1.json"
    done
    python3 Benchmarks/fp8_gemm_probe.py > "$OUT/fp8-gemm-probe.txt" 2>&1 || true
    python3 - "$OUT" <<'PY'
import glob, json, os, sys
print("| case | math | tables | forward ms | pairs/s | cross ms | top ms | bags ms | max |dp| | mean |dp| |")
print("|---|---|---|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(os.path.join(sys.argv[1], "fp8*.json"))):
    name = os.path.basename(f)[:-5]
    d = json.load(open(f))
    st = {s["name"]: s["milliseconds"] for s in d.get("stages", [])}
    ref = d.get("reference") or {}
    print(f"| {name} | {d['engine'].split('MLP ')[1].split(',')[0]} | {name.split('-')[-2]} | {d['device_forward_ms']:.3f} | "
          f"{d['device_samples_per_second']/1e6:.2f}M | {st.get('cross network', 0):.3f} | {st.get('top MLP + sigmoid', 0):.3f} | "
          f"{st.get('embedding bags', 0):.3f} | {ref.get('max_abs_dp', -1):.2g} | {ref.get('mean_abs_dp', -1):.2g} |")
PY
}

# Per-kernel times of one mlperf-v2 forward in bf16 and fp8 math (Nsight Compute, no cache flushes).
# The dot interaction's kernels alone, built with nvcc from interaction.cu as it is, against a CPU reference and the
# copy bandwidth (Benchmarks/interaction_probe.cu).
stage_interaction-probe() {
    nvcc -O3 -arch=sm_90 -o $WORK/interaction_probe Benchmarks/interaction_probe.cu && $WORK/interaction_probe
}
# fp32 Linear layers alone: Bagel's exact and 3×TF32 tiles (linear_f32.cu) against cuBLASLt's exact, TF32 and
# bf16×9 heuristics, and exhaustive exact fp32 with EXHAUSTIVE=1 (Benchmarks/linear_probe.cu).
stage_linear-probe() {
    nvcc -O3 -arch=sm_90 -std=c++17 -o $WORK/linear_probe Benchmarks/linear_probe.cu -lcublasLt && $WORK/linear_probe
}
# int8 and int4 row layouts (fused, padded to 16 bytes, codes split from scale/bias) timed on random rows of the paper
# workload's shape, against their sector floors and fp32 rows of one 128-byte line.
stage_row-layout-probe() {
    nvcc -O3 -arch=sm_90 -std=c++17 -o $WORK/row_layout_probe Benchmarks/row_layout_probe.cu && $WORK/row_layout_probe
}
# The fused MLP chains (mlp_f32.cu) against cuBLASLt layer by layer, both graph-replayed: the presets' chains
# (MLP_CHAINS, default all five) in each variant of MLP_VARIANTS ("label:DEFINE=value ..." separated by ';'; default
# 8, 16 and 32 samples a block) at MLP_BATCHES (default 256 1024 2048 8192 16384). MLP_NCU=1 adds Nsight Compute's
# warp stall reasons, L1 hit rate and L2 read sectors for each variant's fused kernel at batch 2048. terabyte-dot is the
# top chain with the dot interaction inside (it reads T; cuBLAS's layers start from r).
stage_mlp-probe() {
    local chains=("terabyte-bottom:MLP_WIDTHS=16,512,256,64 MLP_INPUT=13 MLP_OUTPUT=64"
                  "terabyte-top:MLP_WIDTHS=416,512,512,256 MLP_INPUT=415 MLP_LOGIT=1"
                  "terabyte-dot:MLP_WIDTHS=416,512,512,256 MLP_INPUT=415 MLP_LOGIT=1 MLP_DOT_ROWS=27 MLP_DOT_DIM=64"
                  "mlperf-v1-bottom:MLP_WIDTHS=16,512,256,128 MLP_INPUT=13 MLP_OUTPUT=128"
                  "mlperf-v1-top:MLP_WIDTHS=480,1024,1024,512,256 MLP_INPUT=479 MLP_LOGIT=1")
    local variants
    IFS=';' read -ra variants <<< "${MLP_VARIANTS:-rows8:MLP_ROWS=8;rows16:MLP_ROWS=16;rows32:MLP_ROWS=32}"
    local built=()
    for chain in "${chains[@]}"; do
        local name=${chain%%:*}
        [ -n "${MLP_CHAINS:-}" ] && [[ " $MLP_CHAINS " != *" $name "* ]] && continue
        for variant in "${variants[@]}"; do
            local exe=$WORK/mlp_probe_${name}_${variant%%:*}
            # nvcc splits a -D value at its commas: the shape goes in through a header instead.
            printf '#define %s\n' ${chain#*:} ${variant#*:} | sed 's/=/ /' > $exe.h
            nvcc -O3 -arch=sm_90 -std=c++17 -include $exe.h -o $exe Benchmarks/mlp_probe.cu -lcublasLt 2> $exe.log &
            built+=("$exe")
        done
    done
    wait
    for exe in "${built[@]}"; do
        [ -x $exe ] || { echo "$(basename $exe) did not build (shared memory or registers?):"; head -5 $exe.log; continue; }
        $exe "$(basename $exe)" ${MLP_BATCHES:-256 1024 2048 8192 16384}
        if [ "${MLP_NCU:-0}" = 1 ]; then
            ncu -k mlp_f32 -c 1 --section WarpStateStats --section SchedulerStats --section SpeedOfLight \
                --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio,l1tex__t_sector_hit_rate.pct,lts__t_sectors_srcunit_tex_op_read.sum" \
                $exe "$(basename $exe)" 2048 > $OUT/ncu-$(basename $exe).txt 2>&1
            grep -E "stalled_|hit_rate|lts__t_sectors|Issued|Eligible|Warp Cycles|Duration|Throughput|cycles being stalled" \
                $OUT/ncu-$(basename $exe).txt | awk '$NF+0 > 0.05 || /cycles/' | head -30
        fi
    done
}
stage_ncu-forward() { BAGEL=$BAGEL OUT=$OUT bash Benchmarks/ncu_forward.sh; }

# The mlperf-v2 forward (1M caps, batch 8192) of this binary against the previous commit's (.gpu/bagel-prev.xz),
# alternating, two rounds: bf16 math with fp32 and int4 tables, fp32 and tf32 math with fp32 tables.
stage_dense-ab() {
    for round in 1 2; do
        for bin in prev new; do
            local exe=$BAGEL
            [ $bin = prev ] && exe=$PREV
            for case in ${AB_CASES:-bf16:fp32 bf16:int8 bf16:int4 fp32:fp32 tf32:fp32}; do
                $exe bench e2e --preset mlperf-v2 --max-rows "${BENCH_ROWS:-1000000}" --batch-size 8192 --device gpu \
                    --math ${case%%:*} --dtype ${case##*:} --seconds 2 --json "$OUT/ab-$bin-${case/:/-}-$round.json"
            done
        done
    done
    python3 - "$OUT" <<'PY'
import glob, json, os, sys
rows = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "ab-*.json"))):
    _, bin, math, dtype, rnd = os.path.basename(f)[:-5].split("-")
    d = json.load(open(f))
    stages = {s["name"]: s["milliseconds"] for s in d.get("stages", [])}
    rows.setdefault((math, dtype), {}).setdefault(bin, []).append(
        (d["device_forward_ms"], stages.get("cross network", 0), (d.get("reference") or {}).get("max_abs_dp", -1)))
print("| math | tables | prev forward ms | new forward ms | new/prev | prev cross ms | new cross ms | new max |dp| |")
print("|---|---|---|---|---|---|---|---|")
for (math, dtype), r in rows.items():
    p, n = r.get("prev", []), r.get("new", [])
    if not p or not n: continue
    fp = sorted(x[0] for x in p); fn = sorted(x[0] for x in n)
    print(f"| {math} | {dtype} | {' / '.join('%.3f' % x for x in fp)} | {' / '.join('%.3f' % x for x in fn)} | "
          f"{min(fn) / min(fp):.3f} | {min(x[1] for x in p):.3f} | {min(x[1] for x in n):.3f} | {max(x[2] for x in n):.2g} |")
PY
}

# The terabyte forward (fp32, dim 64, one-hot) at 2048 and 16384, this binary against the previous commit's.
stage_terabyte-ab() {
    for round in 1 2; do
        for bin in prev new; do
            local exe=$BAGEL
            [ $bin = prev ] && exe=$PREV
            for batch in 2048 16384; do
                $exe bench e2e --preset terabyte --max-rows 1000000 --batch-size $batch --device gpu --seconds 2 \
                    --json "$OUT/tb-$bin-$batch-$round.json"
            done
        done
    done
    python3 - "$OUT" <<'PY'
import glob, json, os, sys
for batch in (2048, 16384):
    for bin in ("prev", "new"):
        ms = sorted(json.load(open(f))["device_forward_ms"] * 1000 for f in glob.glob(os.path.join(sys.argv[1], f"tb-{bin}-{batch}-*.json")))
        print(f"terabyte batch {batch} {bin}: " + " / ".join("%.1f us" % x for x in ms))
PY
}

# PyTorch + CUDA graphs on the terabyte and mlperf-v1 shapes (1M-row caps), batches 2048 and 16384.
torch_dlrm_terabyte_mlperf_v1() {
    for preset in terabyte mlperf-v1; do
        $BAGEL init --preset $preset --max-rows 1000000 --config-only --out $WORK/$preset --force >/dev/null
        python3 Benchmarks/torch_dlrm.py --config $WORK/$preset/model.json --batch 2048 16384 \
            --json "$OUT/torch-dlrm-$preset.json"
    done
}

# The dot-interaction forwards, this binary against the previous one (alternating, two rounds), with PyTorch + CUDA
# graphs on the same shapes and the copy probe in the same call. FORWARD_CASES: preset:math:batch.
stage_forward-ab() {
    local cases=${FORWARD_CASES:-terabyte:fp32:2048 terabyte:fp32:16384 terabyte:bf16:2048 terabyte:bf16:16384 mlperf-v1:fp32:2048 mlperf-v1:bf16:2048 kaggle:fp32:2048 paper:fp32:2048}
    for round in 1 2; do
        for bin in prev new; do
            local exe=$BAGEL
            [ $bin = prev ] && exe=$PREV
            for c in $cases; do
                IFS=: read -r preset math batch <<< "$c"
                $exe bench e2e --preset $preset --max-rows 1000000 --batch-size $batch --device gpu --math $math \
                    --seconds 2 --json "$OUT/fab_${bin}_${preset}_${math}_${batch}_$round.json" > /dev/null
            done
        done
    done
    torch_dlrm_terabyte_mlperf_v1
    python3 - "$OUT" <<'PY'
import glob, json, os, sys
rows = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "fab_*.json"))):
    _, bin, preset, math, batch, rnd = os.path.basename(f)[:-5].split("_")
    d = json.load(open(f))
    st = {s["name"]: s["milliseconds"] * 1000 for s in d.get("stages", [])}
    rows.setdefault((preset, math, batch), {}).setdefault(bin, []).append(
        (d["device_forward_ms"] * 1000, st.get("bottom MLP", 0), st.get("interaction", 0), st.get("top MLP + sigmoid", 0),
         (d.get("reference") or {}).get("max_abs_dp", -1)))
print("| preset | math | batch | prev forward µs | new forward µs | new/prev | bottom µs prev→new | interaction µs prev→new | top µs prev→new | new max |Δp| |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (preset, math, batch), r in rows.items():
    p, n = r.get("prev", []), r.get("new", [])
    if not p or not n: continue
    m = lambda xs, i: min(x[i] for x in xs)
    print(f"| {preset} | {math} | {batch} | {' / '.join('%.1f' % x[0] for x in p)} | {' / '.join('%.1f' % x[0] for x in n)} | "
          f"{m(n, 0) / m(p, 0):.3f} | {m(p, 1):.1f} → {m(n, 1):.1f} | {m(p, 2):.1f} → {m(n, 2):.1f} | {m(p, 3):.1f} → {m(n, 3):.1f} | {max(x[4] for x in n):.2g} |")
for f in sorted(glob.glob(os.path.join(sys.argv[1], "torch-dlrm-*.json"))):
    print(os.path.basename(f), json.dumps(json.load(open(f)))[:600])
PY
}

# Exact fp32 against 3×TF32 (`--math tf32x3`) on this binary alone (older ones lack the mode), alternating, two
# rounds, with mlperf-v1's 20-lookup case and PyTorch + CUDA graphs on the same shapes in the same call.
# MATH_CASES: preset:math:batch[:lookups].
stage_forward-math() {
    local cases=${MATH_CASES:-terabyte:fp32:2048 terabyte:tf32x3:2048 terabyte:fp32:16384 terabyte:tf32x3:16384 mlperf-v1:fp32:2048 mlperf-v1:tf32x3:2048 mlperf-v1:fp32:2048:20 mlperf-v1:tf32x3:2048:20 mlperf-v2:fp32:8192 mlperf-v2:tf32x3:8192}
    # BOTTOM_ORDERS="in-order beside beside-first": each case under each --bottom-mlp, labelled <math>-<order>,
    # alternating within each round.
    for round in 1 2; do
        for c in $cases; do
            IFS=: read -r preset math batch lookups <<< "$c"
            for order in ${BOTTOM_ORDERS:-default}; do
                # CHAIN_AB=1: each fp32 case also with the MLP chains off (BAGEL_MLP_CHAINS=0), labelled fp32-layers;
                # PREFETCH_AB=1: also with the chains' L2 prefetch of their weights off, labelled fp32-noprefetch.
                for chains in default ${CHAIN_AB:+layers} ${PREFETCH_AB:+noprefetch}; do
                    [ $chains != default ] && [ $math != fp32 ] && continue
                    local label=$math flag=""
                    [ $order != default ] && { label=$math-$order; flag="--bottom-mlp $order"; }
                    [ $chains != default ] && label=$label-$chains
                    BAGEL_MLP_CHAINS=$([ $chains = layers ] && echo 0 || echo 1) \
                    BAGEL_MLP_PREFETCH=$([ $chains = noprefetch ] && echo 0 || echo 1) \
                    $BAGEL bench e2e --preset $preset --max-rows 1000000 --batch-size $batch --device gpu --math $math \
                        ${lookups:+--lookups $lookups} --seconds 2 $flag \
                        --json "$OUT/fm_${preset}_${label}_${batch}_${lookups:-1}_$round.json" > /dev/null
                done
            done
        done
    done
    torch_dlrm_terabyte_mlperf_v1
    python3 Benchmarks/torch_dlrm.py --config $WORK/mlperf-v1/model.json --batch 2048 --lookups 20 \
        --json "$OUT/torch-dlrm-mlperf-v1-20.json"
    python3 - "$OUT" <<'PY'
import glob, json, os, sys
rows = {}
for f in sorted(glob.glob(os.path.join(sys.argv[1], "fm_*.json"))):
    _, preset, math, batch, lookups, rnd = os.path.basename(f)[:-5].split("_")
    d = json.load(open(f))
    st = {s["name"]: s["milliseconds"] * 1000 for s in d.get("stages", [])}
    rows.setdefault((preset, batch, lookups), {}).setdefault(math, []).append(
        (d["device_forward_ms"] * 1000, st.get("bottom MLP", 0), st.get("top MLP + sigmoid", 0),
         (d.get("reference") or {}).get("max_abs_dp", -1)))
print("| preset | batch | lookups | math | forward µs (rounds) | bottom µs | top µs | max |Δp| |")
print("|---|---|---|---|---|---|---|---|")
for (preset, batch, lookups), r in rows.items():
    for math, xs in r.items():
        print(f"| {preset} | {batch} | {lookups} | {math} | {' / '.join('%.1f' % x[0] for x in xs)} | "
              f"{min(x[1] for x in xs):.1f} | {min(x[2] for x in xs):.1f} | {max(x[3] for x in xs):.2g} |")
for f in sorted(glob.glob(os.path.join(sys.argv[1], "fm_*_1.json"))):
    print(os.path.basename(f), "; ".join(json.load(open(f)).get("linear_layers") or []))
for f in sorted(glob.glob(os.path.join(sys.argv[1], "torch-dlrm-*.json"))):
    print(os.path.basename(f), json.dumps(json.load(open(f)))[:600])
PY
}

# Issue 13's multi-hot mlperf-v1 case (20 lookups a bag) in fp32 and bf16, with PyTorch + CUDA graphs on the same
# shapes in the same call.
stage_mlperf-v1-multihot() {
    for batch in 2048 16384; do
        for math in fp32 bf16; do
            $BAGEL bench e2e --preset mlperf-v1 --max-rows 1000000 --lookups 20 --batch-size $batch --device gpu \
                --math $math --seconds 2 --json "$OUT/mv1-20-$math-$batch.json" > /dev/null
        done
    done
    $BAGEL init --preset mlperf-v1 --max-rows 1000000 --config-only --out $WORK/mlperf-v1 --force >/dev/null
    python3 Benchmarks/torch_dlrm.py --config $WORK/mlperf-v1/model.json --batch 2048 16384 --lookups 20 \
        --json "$OUT/torch-dlrm-mlperf-v1-20.json"
    python3 - "$OUT" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "mv1-20-*.json"))):
    d = json.load(open(f))
    print(os.path.basename(f), "forward %.1f us" % (d["device_forward_ms"] * 1000), "max |dp| %.2g" % (d.get("reference") or {}).get("max_abs_dp", -1))
PY
}

# Which lane counts the mlperf-v2 bags want per storage type (bf16 math, batch 8192): the default, the
# autotuner's per-table choice and fixed variants.
stage_mlperf-variants() {
    mlperf_variants variants "${DTYPES_E2E:-int8 int4 fp32}" \
        "${E2E_VARIANTS:-auto tune vectorized:lanes=4,unroll=4 vectorized:lanes=4,unroll=8 vectorized:lanes=8,unroll=2}"
    python3 - "$OUT" <<'PY'
import glob, json, os, sys
for f in sorted(glob.glob(os.path.join(sys.argv[1], "variants-*.json"))):
    d = json.load(open(f))
    st = {s["name"]: s["milliseconds"] * 1000 for s in d.get("stages", [])}
    print(f"{os.path.basename(f)[9:-5]:40s} forward {d['device_forward_ms']:.3f} ms  {d['device_samples_per_second']/1e6:.2f}M/s  bags {st.get('embedding bags', 0):.1f} us")
PY
}

# int8 row-wise tables against fp32 on Bagel's kernels, with PyTorch fp32 on the same inputs (PyTorch
# has no int8 EmbeddingBag); then the paper preset's forward with fp32 and with int8 tables.
stage_int8() {
    local variants=${INT8_VARIANTS:-vectorized,bagel,vectorized:split=2,vectorized:unroll=16}
    embedding_run int8-fp32 --datasets "${DATASETS:-random,one_item,low,medium,high}" --variants "$variants" \
        --runs "${RUNS:-21}" --table-batched --verify
    $BAGEL bench embedding --dtype int8 --traces $TRACES --datasets "${DATASETS:-random,one_item,low,medium,high}" \
        --variants "$variants" --runs "${RUNS:-21}" --table-batched --verify --json "$OUT/bagel-int8.json"
    $BAGEL init --preset paper --dtype int8 --out $WORK/paper-int8 --force > /dev/null
    for variant in vectorized bagel; do
        $BAGEL bench e2e --preset paper --batch-size 2048 --device gpu --seconds 3 --variant $variant \
            --dataset medium --traces $TRACES --json "$OUT/e2e-paper-fp32-$variant.json"
        $BAGEL bench e2e --model $WORK/paper-int8 --batch-size 2048 --device gpu --seconds 3 --variant $variant \
            --dataset medium --traces $TRACES --json "$OUT/e2e-paper-int8-$variant.json"
    done
}

# Bagel only (no PyTorch): a sweep of the paper's knobs (prefetch distance, register caps) on every dataset.
stage_sweep() {
    $BAGEL bench embedding --traces $TRACES --datasets "${SWEEP_DATASETS:-random,one_item,low,medium,high}" --runs "${RUNS:-21}" \
        --variants "${SWEEP_VARIANTS:-baseline,rpf:dist=1,rpf:dist=2,rpf:dist=3,rpf:dist=4,rpf:dist=8,combined:dist=4,optmt:regs=32,optmt:minblocks=8,combined:regs=40,dist=2,combined:regs=56,dist=2,l2p:regs=32}" \
        --json "$OUT/bagel-sweep.json"
}

# Nsight Compute on one table's kernel per variant and dataset (for docs/CHARACTERIZATION.md):
# achieved occupancy, DRAM and L2, and where warps stall. Clocks left alone (--clock-control none).
NCU_METRICS=gpu__time_duration.sum,sm__warps_active.avg.pct_of_peak_sustained_active,\
sm__maximum_warps_per_active_cycle_pct,dram__throughput.avg.pct_of_peak_sustained_elapsed,\
lts__t_sector_hit_rate.pct,smsp__average_warp_latency_per_inst_issued.ratio,\
smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_wait_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_short_scoreboard_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_mio_throttle_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_not_selected_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_selected_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_math_pipe_throttle_per_issue_active.ratio,\
smsp__average_warps_issue_stalled_drain_per_issue_active.ratio,\
smsp__issue_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,\
l1tex__throughput.avg.pct_of_peak_sustained_active,lts__throughput.avg.pct_of_peak_sustained_elapsed
stage_ncu() {
    local ncu
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    [ -n "$ncu" ] || { echo "ncu not found"; return 1; }
    mkdir -p "$OUT/ncu"
    for variant in ${NCU_VARIANTS:-baseline optmt optmt:regs=32 rpf rpf:dist=4 rpf-smem rpf-l1 l2p combined vectorized vectorized:split=2 bagel}; do
        for dataset in ${NCU_DATASETS:-medium random}; do
            # NCU_TABLES=12: all tables in one launch as the engine runs them; ncu then profiles the second launch
            # of each grid shape (the one-table launches and the batched one).
            local tables=${NCU_TABLES:-1} batched=""
            [ "$tables" -gt 1 ] && batched="--table-batched"
            $ncu --clock-control none --kernel-name regex:embedding_bag --launch-skip 1 --launch-count 1 \
                ${batched:+--filter-mode per-launch-config} \
                --csv --page raw --metrics "$NCU_METRICS" --log-file "$OUT/ncu/${variant//:/_}-$dataset${NCU_DTYPE:+-$NCU_DTYPE}.csv" \
                $BAGEL bench embedding --tables $tables $batched --runs 2 --datasets $dataset --variants $variant \
                    --traces $TRACES --dtype "${NCU_DTYPE:-fp32}" ${BENCH_SHAPE:-} \
                > /dev/null 2>> "$OUT/ncu/errors.txt" || echo "ncu failed for $variant $dataset"
        done
    done
    ls -la "$OUT/ncu" | head -40
}

# The full MLPerf DLRM-v2 model (every table at its size, 204M rows) with int8 tables (27.8 GB), bf16 and fp8 math.
stage_mlperf-full-int8() {
    for math in ${FULL_MATHS:-bf16 fp8}; do
        $BAGEL bench e2e --preset mlperf-v2 --max-rows 40000000 --batch-size 8192 --device gpu --math $math --dtype int8 \
            --seconds 3 --json "$OUT/full-int8-$math.json" || return 1
    done
}

# PyTorch's DLRM_DCN forward (plain modules, TorchRec's arithmetic) at mlperf-v2 shapes, 1M-row caps, fp32 and bf16
# autocast, eager and CUDA graph, with the copy bandwidth: the baseline beside the dense-ab and fp8 stages.
stage_torch-dcn() {
    $BAGEL init --preset mlperf-v2 --max-rows "${BENCH_ROWS:-1000000}" --config-only --out $WORK/mlperf-v2 --force >/dev/null
    for autocast in fp32 bf16; do
        python3 Benchmarks/torch_dlrm.py --config $WORK/mlperf-v2/model.json --batch 8192 --autocast $autocast \
            --json "$OUT/torch-dcn-$autocast.json" || return 1
    done
}

stage_e2e() {
    for preset in terabyte mlperf-v1; do
        $BAGEL init --preset $preset --max-rows 1000000 --config-only --out $WORK/$preset --force >/dev/null
        for batch in 2048 16384; do
            $BAGEL bench e2e --preset $preset --max-rows 1000000 --batch-size $batch --device gpu --seconds 3 \
                --json "$OUT/e2e-$preset-$batch.json"
        done
        python3 Benchmarks/torch_dlrm.py --config $WORK/$preset/model.json --batch 2048 16384 \
            --json "$OUT/torch-dlrm-$preset.json"
    done
    # The paper preset: baseline vs combined vs Bagel's best, forward alone.
    for variant in ${E2E_VARIANTS:-baseline combined bagel tune}; do
        $BAGEL bench e2e --preset paper --batch-size 2048 --device gpu --seconds 3 --variant $variant \
            --dataset medium --traces $TRACES --json "$OUT/e2e-paper-$variant.json"
    done
}

# The paper preset's whole predict (check, pack, upload, forward, download) with the host work on
# one thread and on all cores, same binary, same run.
stage_e2e-host() {
    for threads in 1 all; do
        local flag=""
        [ $threads = 1 ] && flag="--threads 1"
        $BAGEL bench e2e --preset paper --batch-size 2048 --device gpu --seconds 3 --variant vectorized \
            --dataset medium --traces $TRACES $flag --json "$OUT/e2e-paper-host-$threads.json"
    done
}

# The paper preset's and mlperf-v2's (int8 tables) models and MLPerf-layout files under $WORK/hp-*, and the host's
# time to read, check and pack their batches (bench host --data).
host_files() {
    local rc=0
    $BAGEL init --preset paper --out $WORK/hp-paper --force > /dev/null || rc=1
    $BAGEL generate mlperf --model $WORK/hp-paper --rows ${PAPER_ROWS:-204800} --out $WORK/hp-paper-data > /dev/null || rc=1
    $BAGEL init --preset mlperf-v2 --max-rows 1000000 --dtype int8 --out $WORK/hp-mv2 --force > /dev/null || rc=1
    $BAGEL generate mlperf --model $WORK/hp-mv2 --rows ${MLPERF_ROWS:-409600} --skew zipf --out $WORK/hp-mv2-data > /dev/null || rc=1
    $BAGEL bench host --model $WORK/hp-paper --data $WORK/hp-paper-data --iterations 40 || rc=1
    $BAGEL bench host --model $WORK/hp-mv2 --data $WORK/hp-mv2-data --batch-size 8192 --iterations 40 || rc=1
    return $rc
}

# predict from host_files' files with binary $1 (called $2, round $3): probabilities to $WORK/hp-p-<name>-$2-$3.txt,
# its report to $OUT/hp-predict-<name>-$2-$3.txt; prints the rates after the first batch.
host_predict() {
    local exe=$1 bin=$2 round=$3 rc=0
    $exe predict --model $WORK/hp-paper --data $WORK/hp-paper-data --batch-size 2048 --device gpu \
        --variant vectorized --out $WORK/hp-p-paper-$bin-$round.txt 2> "$OUT/hp-predict-paper-$bin-$round.txt" || rc=1
    $exe predict --model $WORK/hp-mv2 --data $WORK/hp-mv2-data --batch-size 8192 --device gpu --math bf16 \
        --out $WORK/hp-p-mv2-$bin-$round.txt 2> "$OUT/hp-predict-mv2-$bin-$round.txt" || rc=1
    echo "$bin $round: paper $(grep -o 'after the first batch [0-9]* rows/s' "$OUT/hp-predict-paper-$bin-$round.txt"); " \
        "mlperf-v2 $(grep -o 'after the first batch [0-9]* rows/s' "$OUT/hp-predict-mv2-$bin-$round.txt")"
    return $rc
}

# The host pipeline (issue 13): bench e2e's loop of predict calls and its pipelined loop (prepare on a second
# thread, submit one batch ahead), the previous binary (.gpu/bagel-prev.xz) alternating, on the paper preset,
# mlperf-v2 (int8 tables, bf16) and terabyte; then predict from MLPerf-layout files of the paper preset and mlperf-v2.
stage_host-pipeline() {
    local rc=0
    for preset in paper mlperf-v2 terabyte; do
        local batch=2048
        [ $preset = mlperf-v2 ] && batch=8192
        $BAGEL bench host --preset $preset --batch-size $batch || rc=1
    done
    host_files || rc=1
    for round in $(seq ${ROUNDS:-2}); do
        for bin in prev new; do
            local exe=$BAGEL
            [ $bin = prev ] && exe=$PREV
            [ -x $exe ] || continue
            echo "--- round $round: $bin"
            $exe bench e2e --preset paper --batch-size 2048 --device gpu --seconds 3 --variant vectorized \
                --dataset medium --traces $TRACES --json "$OUT/hp-paper-$bin-$round.json" || rc=1
            $exe bench e2e --preset mlperf-v2 --max-rows 1000000 --dtype int8 --math bf16 --batch-size 8192 --device gpu \
                --seconds 3 --json "$OUT/hp-mv2-$bin-$round.json" || rc=1
            $exe bench e2e --preset terabyte --max-rows 1000000 --batch-size 2048 --device gpu --seconds 3 \
                --json "$OUT/hp-tb-$bin-$round.json" || rc=1
            host_predict $exe $bin $round || rc=1
        done
    done
    python3 - "$OUT" "$WORK" <<'PY' || rc=1
import glob, json, os, re, sys
out, work = sys.argv[1], sys.argv[2]
print("| case | binary | forward ms | forward samples/s | predict loop | pipelined | pipelined / forward | host prepare ms |")
print("|---|---|---|---|---|---|---|---|")
for f in sorted(glob.glob(f"{out}/hp-*-*-*.json")):
    _, case, bin, rnd = os.path.basename(f)[:-5].split("-")
    d = json.load(open(f))
    fwd = d["device_samples_per_second"]; pipe = d.get("pipelined_samples_per_second")
    print(f"| {case} {rnd} | {bin} | {d['device_forward_ms']:.3f} | {fwd/1e6:.2f}M | {d['samples_per_second']/1e6:.2f}M | "
          + (f"{pipe/1e6:.2f}M | {pipe/fwd*100:.0f}% | {d['host_prepare_ms']:.3f} |" if pipe else "— | — | — |"))
for f in sorted(glob.glob(f"{out}/hp-predict-*.txt")):
    m = re.findall(r"after the first batch (\d+) rows/s", open(f).read())
    print(os.path.basename(f), "after the first batch:", m[-1] if m else "n/a")
bad = 0
for name in ["paper", "mv2"]:
    files = sorted(glob.glob(f"{work}/hp-p-{name}-*.txt"))
    rows = [[float(x) for x in open(p)] for p in files]
    worst = max((abs(a - b) for other in rows[1:] for a, b in zip(rows[0], other)), default=0)
    same = all(len(r) == len(rows[0]) for r in rows)
    print(f"predict {name}: {len(files)} runs, {len(rows[0]) if rows else 0} rows each, max |dp| between them {worst:.2e}")
    bad += not (rows and same and worst <= 1e-5)
sys.exit(1 if bad else 0)
PY
    return $rc
}

# predict from MLPerf-layout files only (the file half of host-pipeline): bench host --data, then predict with this
# binary and the previous one (.gpu/bagel-prev.xz), alternating, on the paper preset and mlperf-v2 (int8, bf16).
stage_host-read() {
    local rc=0
    host_files || rc=1
    for round in $(seq ${ROUNDS:-2}); do
        for bin in prev new; do
            local exe=$BAGEL
            [ $bin = prev ] && exe=$PREV
            [ -x $exe ] || continue
            host_predict $exe $bin $round || rc=1
        done
    done
    for name in paper mv2; do
        cmp -s $WORK/hp-p-$name-new-1.txt $WORK/hp-p-$name-new-2.txt || echo "$name: the new binary's two runs differ (cuBLASLt timing may pick other algorithms)"
    done
    return $rc
}

# bagel serve on the GPU, terabyte preset; bagel loadgen at concurrency 1, 16, 128, batching on and off.
stage_serve() {
    $BAGEL init --preset terabyte --max-rows 1000000 --out $WORK/served --force > /dev/null
    for mode in batching no-batching; do
        local flag=""
        [ $mode = no-batching ] && flag=--no-batching
        $BAGEL serve --model $WORK/served --device gpu --port 18000 --grpc-port 18001 $flag > "$OUT/serve-$mode.log" 2>&1 &
        local server=$!
        for _ in $(seq 300); do curl -sf http://127.0.0.1:18000/v2/health/ready > /dev/null && break; sleep 0.2; done
        for concurrency in 1 16 128; do
            $BAGEL loadgen --url http://127.0.0.1:18000 --name terabyte --protocol ${LOAD_PROTOCOL:-binary} \
                --concurrency $concurrency --duration ${LOAD_SECONDS:-8} --batch ${LOAD_BATCH:-64} \
                --json "$OUT/loadgen-$mode-$concurrency.json"
        done
        curl -s http://127.0.0.1:18000/metrics | grep -E "^bagel_(batch_size|request_failures|requests)" > "$OUT/metrics-$mode.txt"
        kill -TERM $server
        wait $server
        echo "server exit status: $?"
    done
}

# Issue 13's serving goal: p99 at 16 concurrent binary clients with terabyte batch-64 requests, for the
# batching window as shipped (500 µs), a short one and none.
stage_serve-p99() {
    $BAGEL init --preset terabyte --max-rows 1000000 --out $WORK/served --force > /dev/null
    for mode in window-500us window-100us no-batching; do
        local flag=""
        [ $mode = window-100us ] && flag="--max-delay-us 100"
        [ $mode = no-batching ] && flag=--no-batching
        $BAGEL serve --model $WORK/served --device gpu --port 18000 --grpc-port 18001 $flag > "$OUT/serve-$mode.log" 2>&1 &
        local server=$!
        for _ in $(seq 300); do curl -sf http://127.0.0.1:18000/v2/health/ready > /dev/null && break; sleep 0.2; done
        $BAGEL loadgen --url http://127.0.0.1:18000 --name terabyte --protocol binary --concurrency 16 \
            --duration ${LOAD_SECONDS:-6} --batch 64 --json "$OUT/p99-$mode.json" | tail -4
        kill -TERM $server
        wait $server
    done
}

# Issue 13's serving load (terabyte, 16 binary clients, batch-64 requests, the default 100 µs window) on this binary
# and the previous one (.gpu/bagel-prev.xz), alternating, two rounds: a change's effect on p99 on one machine.
stage_serve-ab() {
    $BAGEL init --preset terabyte --max-rows 1000000 --out $WORK/served --force > /dev/null
    for round in 1 2; do
        for bin in prev new; do
            local exe=$BAGEL
            [ $bin = prev ] && exe=$PREV
            $exe serve --model $WORK/served --device gpu --port 18000 --grpc-port 18001 > "$OUT/serve-ab-$bin-$round.log" 2>&1 &
            local server=$!
            for _ in $(seq 300); do curl -sf http://127.0.0.1:18000/v2/health/ready > /dev/null && break; sleep 0.2; done
            echo -n "$bin, round $round: "
            $BAGEL loadgen --url http://127.0.0.1:18000 --name terabyte --protocol binary --concurrency 16 \
                --duration ${LOAD_SECONDS:-6} --batch 64 --json "$OUT/serve-ab-$bin-$round.json" | tail -1
            kill -TERM $server
            wait $server
        done
    done
}

# One load on a fresh server of $WORK/served (so that its /metrics are that load's alone): serve_load NAME CLIENTS
# "SERVER_PREFIX" "LOAD_PREFIX" [serve flags...] writes $OUT/load-NAME.json and $OUT/metrics-NAME.txt
# (Benchmarks/serve_summary.py tabulates them). The prefixes run each side under e.g. taskset.
serve_load() {
    local name=$1 clients=$2 server_prefix=$3 load_prefix=$4
    shift 4
    $server_prefix $BAGEL serve --model $WORK/served --device gpu --port 18000 --grpc-port 18001 "$@" \
        > "$OUT/serve-$name.log" 2>&1 &
    local server=$!
    for _ in $(seq 300); do curl -sf http://127.0.0.1:18000/v2/health/ready > /dev/null && break; sleep 0.2; done
    echo "--- $name"
    $load_prefix $BAGEL loadgen --url http://127.0.0.1:18000 --name terabyte --protocol binary --concurrency $clients \
        --duration ${LOAD_SECONDS:-6} --batch 64 --json "$OUT/load-$name.json" | tail -2
    curl -s http://127.0.0.1:18000/metrics | grep -v "^#" > "$OUT/metrics-$name.txt"
    kill -TERM $server
    wait $server
}

# Issue 13's serving goal with the load generator on cores of its own: terabyte batch-64 binary requests at 16 clients,
# server and loadgen sharing all cores (as serve-p99) against the server on cores 0-7 and loadgen on 8-15 (taskset),
# alternating, two rounds.
stage_serve-cores() {
    command -v taskset > /dev/null || { echo "no taskset on this machine"; return 1; }
    $BAGEL init --preset terabyte --max-rows 1000000 --out $WORK/served --force > /dev/null
    for round in $(seq ${ROUNDS:-2}); do
        serve_load shared-$round 16 "" ""
        serve_load split-$round 16 "taskset -c 0-7" "taskset -c 8-15"
    done
    python3 Benchmarks/serve_summary.py "$OUT"
}

# The batching window at 16 clients (terabyte batch-64 binary requests): 0 (merge whatever queued while the engine
# was busy), 50 and 100 µs, alternating, two rounds; then 128 clients at 0 and 100 µs; and the engine alone on one
# padded batch of 512 (bench e2e) for its host + GPU time without load.
stage_serve-window() {
    $BAGEL init --preset terabyte --max-rows 1000000 --out $WORK/served --force > /dev/null
    $BAGEL bench e2e --model $WORK/served --batch-size 512 --device gpu --seconds 2 --json "$OUT/tb-512.json" | tail -3
    for load in 1:0:16 1:50:16 1:100:16 2:0:16 2:50:16 2:100:16 1:0:128 1:100:128; do
        IFS=: read round window clients <<< "$load"
        serve_load c$clients-w$window-$round $clients "" "" --max-delay-us $window
    done
    python3 Benchmarks/serve_summary.py "$OUT"
}

# fp32 GEMM ceiling of this card through PyTorch's cuBLAS (TF32 off): a large square product and the mlperf-v2 shapes.
stage_sgemm-ceiling() {
    python3 - <<'PY'
import torch
torch.backends.cuda.matmul.allow_tf32 = False
def tflops(m, n, k, reps=20):
    a = torch.randn(m, k, device="cuda"); b = torch.randn(k, n, device="cuda")
    for _ in range(3): a @ b
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps): a @ b
    e.record(); e.synchronize()
    return 2 * m * n * k * reps / (s.elapsed_time(e) / 1e3) / 1e12
print(torch.cuda.get_device_name())
for shape in [(8192, 8192, 8192), (16384, 16384, 4096), (8192, 512, 3456), (8192, 3456, 512), (8192, 1024, 3456)]:
    print("fp32 GEMM m=%d n=%d k=%d: %.1f TFLOP/s" % (*shape, tflops(*shape)))
PY
}

# The serving stack as operators and Triton's tools meet it (terabyte preset on the GPU): NVIDIA's
# perf_analyzer (from the tritonclient 2.60 wheel, .gpu/perf_analyzer.xz) over HTTP and gRPC next to
# bagel loadgen at the same concurrency and request size; a model update under load; SIGTERM with
# an idle gRPC connection open.
stage_serving-tools() {
    local PA=/tmp/perf_analyzer port=18100 grpc=18101 model=$WORK/served-tools
    unpack .gpu/perf_analyzer.xz $PA
    $BAGEL init --preset terabyte --max-rows 1000000 --out $model --force > /dev/null
    python3 Benchmarks/perf_analyzer_input.py $model --batch ${LOAD_BATCH:-64} --out $WORK/pa-input.json
    $BAGEL serve --model $model --device gpu --port $port --grpc-port $grpc > "$OUT/serve-tools.log" 2>&1 &
    local server=$!
    for _ in $(seq 300); do curl -sf http://127.0.0.1:$port/v2/health/ready > /dev/null && break; sleep 0.2; done
    curl -s http://127.0.0.1:$port/v2/models/terabyte/config > "$OUT/config.json"
    for round in 1 2; do
        for proto in http grpc; do
            local target=127.0.0.1:$port lg="--protocol binary"
            [ $proto = grpc ] && target=127.0.0.1:$grpc lg="--protocol grpc --grpc 127.0.0.1:$grpc"
            $BAGEL loadgen --url http://127.0.0.1:$port --name terabyte $lg --concurrency 16 --duration 8 \
                --batch ${LOAD_BATCH:-64} --json "$OUT/tools-loadgen-$proto-$round.json"
            timeout 150 $PA -m terabyte -i $proto -u $target --input-data $WORK/pa-input.json --concurrency-range 16 \
                --measurement-interval 4000 --max-trials 8 -f "$OUT/perf-analyzer-$proto-$round.csv" 2>&1 | tail -25
            echo "perf_analyzer $proto exit status: ${PIPESTATUS[0]}"
        done
    done
    # A model update while 16 clients send: the load must see no failed request.
    $BAGEL loadgen --url http://127.0.0.1:$port --name terabyte --protocol binary --concurrency 16 --duration 10 \
        --batch ${LOAD_BATCH:-64} --json "$OUT/update-under-load.json" &
    local load=$!
    sleep 3
    local t0=$(date +%s.%N)
    curl -s -X POST http://127.0.0.1:$port/v2/repository/models/terabyte/load
    echo " (load took $(python3 -c "print(round($(date +%s.%N) - $t0, 2))") s)"
    wait $load
    curl -s http://127.0.0.1:$port/v2/models/stats > "$OUT/stats.json"
    # SIGTERM with an idle gRPC connection and an idle HTTP keep-alive connection open.
    python3 -c "
import socket, time
a = socket.create_connection(('127.0.0.1', $grpc)); b = socket.create_connection(('127.0.0.1', $port))
time.sleep(60)" &
    local idle=$!
    sleep 1
    t0=$(date +%s.%N)
    kill -TERM $server
    wait $server
    echo "server exit status $? after $(python3 -c "print(round($(date +%s.%N) - $t0, 2))") s with idle connections open"
    kill $idle 2>/dev/null
}

stage_predict() {  # --device gpu and --device cpu give the same probabilities on every preset
    python3 - <<'EOF' > $WORK/data.tsv
import random
random.seed(5)
for _ in range(3000):
    dense = [str(int(random.expovariate(0.01)) - 2) if random.random() > 0.15 else "" for _ in range(13)]
    cat = [format(random.getrandbits(32), "08x") if random.random() > 0.05 else "" for _ in range(26)]
    print("\t".join([str(int(random.random() < 0.3))] + dense + cat))
EOF
    for preset in kaggle terabyte mlperf-v1; do
        $BAGEL init --preset $preset --max-rows 200000 --out $WORK/m-$preset --force >/dev/null
        $BAGEL predict --model $WORK/m-$preset --data $WORK/data.tsv --device gpu --out $WORK/gpu-$preset.txt
        $BAGEL predict --model $WORK/m-$preset --data $WORK/data.tsv --device cpu --out $WORK/cpu-$preset.txt
        python3 -c "
import sys
g=[float(x) for x in open('$WORK/gpu-$preset.txt')]; c=[float(x) for x in open('$WORK/cpu-$preset.txt')]
d=max(abs(a-b) for a,b in zip(g,c)); print('$preset: %d rows, max |gpu - cpu| = %.2e' % (len(g), d)); sys.exit(0 if len(g)==len(c)==3000 and d<=1e-5 else 1)"
    done
}

# predict reading ahead on its own thread (default) against reading in line (--no-prefetch) and against the
# previous binary (.gpu/bagel-old.xz, if carried: TSV parsed on one thread), alternating:
# mlperf-v2 at 1M-row caps from MLPerf's multi-hot files (batch 8192), terabyte from Criteo TSV (batch 2048);
# and the engine alone on the same shapes (bench e2e: device forward and the loop of predict calls).
stage_predict-prefetch() {
    local rc=0
    $BAGEL init --preset mlperf-v2 --max-rows 1000000 --out $WORK/mv2 --force > /dev/null
    $BAGEL generate mlperf --model $WORK/mv2 --rows ${MLPERF_ROWS:-409600} --skew zipf --out $WORK/mv2-data > /dev/null
    $BAGEL init --preset terabyte --max-rows 1000000 --out $WORK/tb --force > /dev/null
    $BAGEL generate criteo --rows 1024000 --out $WORK/tb.tsv > /dev/null
    for round in $(seq ${ROUNDS:-2}); do
        for run in "$BAGEL --prefetch" "$BAGEL --no-prefetch" "$OLD"; do
            [ -x "${run%% *}" ] || continue
            echo "--- round $round: $run"
            local exe=${run%% *} flag=${run#* }
            [ "$flag" = "$run" ] && flag=""
            $exe predict --model $WORK/mv2 --data $WORK/mv2-data --batch-size 8192 --device gpu $flag --out $WORK/p-mv2-$round$flag.txt || rc=1
            $exe predict --model $WORK/tb --data $WORK/tb.tsv --batch-size 2048 --device gpu $flag --out $WORK/p-tb-$round${flag}.txt || rc=1
        done
    done
    # Separate processes may pick different cuBLASLt algorithms (timed per run): compare within a tolerance.
    for name in tb mv2; do
        python3 - $WORK/p-$name-1--prefetch.txt $WORK/p-$name-1--no-prefetch.txt $WORK/p-$name-1.txt <<'PY' || rc=1
import os, sys
files = [[float(x) for x in open(path)] for path in sys.argv[1:] if os.path.exists(path)]
worst = max(abs(a - b) for other in files[1:] for a, b in zip(files[0], other))
print(f"{sys.argv[1]}: prefetch, no prefetch (and the previous binary): {len(files[0])} rows each, max |dp| {worst:.2e}")
sys.exit(0 if all(len(f) == len(files[0]) for f in files) and worst <= 1e-5 else 1)
PY
    done
    $BAGEL bench e2e --model $WORK/mv2 --batch-size 8192 --device gpu --seconds 2 || rc=1
    $BAGEL bench e2e --model $WORK/tb --batch-size 2048 --device gpu --seconds 2 || rc=1
    return $rc
}

# Several GPUs. NVLink multicast stays off on the lent machines.
export NCCL_NVLS_ENABLE=0
PORT=${PORT:-29517}

# Two ranks of one command as processes that meet at 127.0.0.1:$PORT; $1 = log prefix, the rest the command.
two_ranks() {
    local prefix=$1; shift
    PORT=$((PORT + 1))
    "$@" --coordinator 127.0.0.1:$PORT --rank 1 --world 2 > "$OUT/$prefix-rank1.txt" 2>&1 &
    local other=$!
    "$@" --coordinator 127.0.0.1:$PORT --rank 0 --world 2 2>&1 | tee "$OUT/$prefix-rank0.txt"
    local rc=${PIPESTATUS[0]}
    wait $other || rc=1
    cat "$OUT/$prefix-rank1.txt"
    return $rc
}

# NCCL checks and sharded parity on every GPU in one process, then as two processes through the
# rendezvous; the sharded probabilities' fingerprints must match between the two.
stage_nccl() {
    local rc=0
    # GPUs 0 and 1 only, as the two ranks: the same plans, so the same fingerprints.
    CUDA_VISIBLE_DEVICES=0,1 $BAGEL doctor --nccl | tee "$OUT/nccl-inprocess.txt" || rc=1
    two_ranks nccl $BAGEL doctor --nccl || rc=1
    python3 - "$OUT" <<'PY' || rc=1
import re, sys
out = sys.argv[1]
def prints(path):
    found = {}
    for line in open(path):
        m = re.search(r"(sharded .*?), (?:\d+ GPUs in one process|rank \d+ of \d+ processes).*fingerprint ([0-9a-f]+)", line)
        if m: found[m.group(1)] = m.group(2)
    return found
one = prints(f"{out}/nccl-inprocess.txt")
bad = 0
for rank in (0, 1):
    other = prints(f"{out}/nccl-rank{rank}.txt")
    for case, value in one.items():
        same = other.get(case) == value
        bad += not same
        print(f"rank {rank} vs one process: {case}: {'same' if same else 'DIFFERENT'} ({value} / {other.get(case)})")
print(f"{len(one)} cases; {bad} differ")
sys.exit(1 if bad or not one else 0)
PY
    return $rc
}

# A model that fits one GPU: replicated and sharded over every GPU against one GPU on its share of the
# batch (per GPU 8192 pairs for mlperf-v2 at 1M-row caps, 2048 samples for terabyte at 10M).
stage_shard-scaling() {
    local gpus=$(nvidia-smi -L | wc -l) rc=0
    for mode in replicated auto; do
        $BAGEL bench e2e --preset mlperf-v2 --max-rows 1000000 --batch-size $((8192 * gpus)) --variant vectorized \
            --gpus all --sharding $mode --scaling --seconds 2 --json "$OUT/scaling-mlperf-v2-$mode.json" || rc=1
        $BAGEL bench e2e --preset terabyte --max-rows 10000000 --batch-size $((2048 * gpus)) --variant vectorized \
            --gpus all --sharding $mode --scaling --seconds 2 --json "$OUT/scaling-terabyte-$mode.json" || rc=1
    done
    return $rc
}

# The bottom MLP beside the bags and the all-to-all (default) against in line before them, alternating.
stage_shard-overlap() {
    local gpus=$(nvidia-smi -L | wc -l) rc=0
    for round in 1 2; do
        for overlap in 1 0; do
            echo "--- round $round, BAGEL_SHARDED_OVERLAP=$overlap"
            BAGEL_SHARDED_OVERLAP=$overlap $BAGEL bench e2e --preset terabyte --max-rows 10000000 --batch-size $((2048 * gpus)) \
                --variant vectorized --gpus all --seconds 1 --json "$OUT/overlap-terabyte-$overlap-$round.json" || rc=1
            BAGEL_SHARDED_OVERLAP=$overlap $BAGEL bench e2e --preset mlperf-v2 --max-rows 1000000 --batch-size $((8192 * gpus)) \
                --variant vectorized --gpus all --seconds 1 --json "$OUT/overlap-mlperf-v2-$overlap-$round.json" || rc=1
        done
    done
    return $rc
}

# The same sharded model as one process over GPUs 0 and 1 and as two processes (one GPU each): the
# first batch's probabilities must be identical.
stage_shard-ranks() {
    local args="bench e2e --preset mlperf-v2 --max-rows 1000000 --batch-size 16384 --variant vectorized --seconds 1"
    $BAGEL $args --gpus 0,1 --probabilities-out $OUT/p-one-process.txt || return 1
    two_ranks shard-ranks $BAGEL $args --probabilities-out $OUT/p-rank.txt || return 1
    cmp $OUT/p-one-process.txt $OUT/p-rank.txt && echo "two processes: probabilities identical to one process (16384 lines)"
}

# predict and serve on every GPU: sharded and replicated predictions against one GPU, then a server over
# all GPUs under load (requests must all succeed).
stage_shard-serve() {
    local rc=0
    $BAGEL init --preset terabyte --max-rows 1000000 --out $WORK/served --force > /dev/null
    $BAGEL generate criteo --rows 20000 --out $WORK/served-data.tsv > /dev/null
    $BAGEL predict --model $WORK/served --data $WORK/served-data.tsv --device gpu --out $WORK/p-one.txt || rc=1
    for mode in auto replicated; do
        $BAGEL predict --model $WORK/served --data $WORK/served-data.tsv --gpus all --sharding $mode --out $WORK/p-$mode.txt || rc=1
        python3 -c "
import sys
a=[float(x) for x in open('$WORK/p-one.txt')]; b=[float(x) for x in open('$WORK/p-$mode.txt')]
d=max(abs(x-y) for x,y in zip(a,b)); print('predict --gpus all --sharding $mode: %d rows, max |dp| vs one GPU = %.2e' % (len(b), d))
sys.exit(0 if len(a)==len(b)>0 and d<=1e-5 else 1)" || rc=1
        $BAGEL serve --model $WORK/served --gpus all --sharding $mode --port 18000 --grpc-port 18001 > "$OUT/serve-$mode.log" 2>&1 &
        local server=$!
        for _ in $(seq 300); do curl -sf http://127.0.0.1:18000/v2/health/ready > /dev/null && break; sleep 0.2; done
        $BAGEL loadgen --url http://127.0.0.1:18000 --name terabyte --protocol binary --concurrency 16 --duration 5 --batch 64 \
            --json "$OUT/loadgen-gpus-$mode.json" || rc=1
        kill -TERM $server
        wait $server || rc=1
        tail -3 "$OUT/serve-$mode.log"
    done
    return $rc
}

# The full MLPerf DLRM-v2 model (104.5 GB fp32) sharded over two GPUs (planned as 80 GB H100s), against one GPU of this machine
# with the rows it cannot hold read from host memory (bit-identical to one H200 in runs 30-31).
stage_shard-full() {
    local args="bench e2e --preset mlperf-v2 --max-rows 40000000 --variant vectorized --dataset high --batch-size 8192 --seconds 3"
    /usr/bin/time -v $BAGEL $args --gpus 0,1 --gpu-memory 80GB --probabilities-out $OUT/p-sharded.txt --json "$OUT/full-sharded.json" || return 1
    /usr/bin/time -v $BAGEL $args --hbm-budget ${HBM_BUDGET:-60GB} --probabilities-out $OUT/p-single.txt --json "$OUT/full-single.json" || return 1
    sha256sum $OUT/p-sharded.txt $OUT/p-single.txt
    echo "runs 30-31 (one H200 all in HBM; one H100 tiered): 286408e0f0a7ebb70a193632dfb8b0f2a835d56af9acd82caf41fe0cba50227f"
    python3 -c "
s=[float(x) for x in open('$OUT/p-sharded.txt')]; o=[float(x) for x in open('$OUT/p-single.txt')]
d=max(abs(a-b) for a,b in zip(s,o)); print('sharded vs one GPU: %d probabilities, max |dp| = %.3g' % (len(s), d))
import sys; sys.exit(0 if len(s)==len(o)==8192 and d<=1e-5 else 1)"
}

status=0
for stage in "$@"; do
    echo "=== $stage" | tee -a "$OUT/stages.txt"
    start=$(date +%s)
    "stage_$stage" > "$OUT/$stage.txt" 2>&1
    rc=$?
    [ $rc -ne 0 ] && status=$rc
    echo "=== $stage: exit $rc, $(( $(date +%s) - start )) s" | tee -a "$OUT/stages.txt"
    tail -n "${TAIL:-25}" "$OUT/$stage.txt"
done
tar czf "$FINAL/results.tgz" -C "$OUT" .
cp "$OUT/stages.txt" "$FINAL/stages.txt"
exit $status
