#!/usr/bin/env bash
# The CUDA paths a CPU-only CI cannot run, in one go on a GPU machine, each step under its own time limit and
# the whole under a deadline, so a short lease still brings back the steps that ran:
#   1. the environment (GPU, torch, CUDA), 2. the `gpu`-marked tests, 3. the main job's CUDA cells with
#   --memory-snapshot, 4. bench.fit of resnet50 at 224 px under the CUDA allocator's fraction,
#   5. bench.ab of one CUDA cell against itself (steps in turns, then readings one after the other) and
#   against a 3% plant, 6. the rest of the suite while time is left.
# Every log, the run folders and the memory snapshot go into $OUT/cuda_check.tgz (rewritten after each step).
#
#   OUT=/tmp/cuda_check PY=python3 scripts/cuda_check.sh [DEADLINE_S] [DEVICE]
#
# DEVICE (default cuda) lets the script itself be checked on a CPU machine before a lease is spent on it.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cuda_check}
PY=${PY:-python3}
DEADLINE=${1:-480}
DEVICE=${2:-cuda}
WORK=$(mktemp -d /tmp/cuda_check.XXXX)
T0=$(date +%s)
mkdir -p "$OUT" "$WORK/logs"
export PYTHONUNBUFFERED=1

left() { echo $((DEADLINE - ($(date +%s) - T0))); }

pack() { tar czf "$OUT/cuda_check.tgz" -C "$WORK" --exclude='*.pt.trace.json*' --exclude='*.gz' . 2>/dev/null; }

# step NAME BUDGET_S COMMAND...: runs COMMAND under min(BUDGET_S, time left), logs it, prints its tail.
step() {
    local name=$1 budget=$2 remaining
    shift 2
    remaining=$(left)
    ((budget > remaining)) && budget=$remaining
    if ((budget < 10)); then
        echo "== $name: not run, ${remaining}s left of the deadline" | tee -a "$WORK/summary.txt"
        return
    fi
    local start rc
    start=$(date +%s)
    timeout -k 5 "$budget" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    echo "== $name: rc=$rc in $(($(date +%s) - start))s (limit ${budget}s)" | tee -a "$WORK/summary.txt"
    tail -n "${TAIL:-15}" "$WORK/logs/$name.log"
    pack
}

CELL=(--cell precision=bf16 --cell data.num_workers=0 --cell data.pin_memory=false --cell data.batch_size=256
    --cell "device=$DEVICE" --set data.pipeline=tensor)
PLANT=(--set-b model.name=bench.guards.planted:extra_time --set-b 'model.kwargs={base: SimpleCNN, extra_share: 0.0309}')

cat >"$WORK/resnet50.yaml" <<'YAML'
# bench.fit's issue-30 target: resnet50 at 224 px, synthetic images, Adam, fp32; a shortened epoch to confirm.
name: resnet50_fit
seed: 0
precision: fp32
model: {name: "torchvision:resnet50"}
data: {name: synthetic_images, image_shape: [3, 224, 224], n_samples: 64, n_test_samples: 16, val_fraction: 0.0,
       batch_size: 4, num_workers: 0}
optim: {name: adam, lr: 0.001}
train: {epochs: 1}
YAML

step env 30 bash -c "nvidia-smi -L; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv;
    $PY -c 'import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda,
    torch.cuda.is_available() and torch.cuda.get_device_name(0))'; nproc; git rev-parse --short HEAD"
step gpu_tests 90 "$PY" -m pytest -p no:cacheprovider -q -m gpu tests/test_precision.py tests/test_distributed.py \
    tests/test_profiling.py tests/test_ci_skips.py
step main_job 200 "$PY" -m bench.run --matrix configs/amp_matrix.yaml --filter "device=$DEVICE" \
    --filter data.batch_size=256 --filter data.pin_memory=true --memory-snapshot --out "$WORK/results" \
    --profiles "$WORK/profiles"
find "$WORK/profiles" -name 'memory_snapshot.pickle' -printf '%s %p\n' | tee -a "$WORK/summary.txt"
step fit 120 "$PY" -m bench.fit --config "$WORK/resnet50.yaml" --set "device=$DEVICE" --max-memory-mb 1500 \
    --out "$WORK/results"
for run in aa_steps:steps aa_readings:readings plant_steps:steps; do
    name=${run%%:*} mode=${run##*:}
    extra=()
    [[ $name == plant* ]] && extra=("${PLANT[@]}")
    step "ab_$name" 90 "$PY" -m bench.ab --a configs/amp_matrix.yaml --b configs/amp_matrix.yaml "${CELL[@]}" \
        --interleave "$mode" --budget-s "${AB_BUDGET_S:-60}" --out "$WORK/results" "${extra[@]}"
done
TAIL=40 step suite 600 "$PY" -m pytest -p no:cacheprovider -q --continue-on-collection-errors -n "$(nproc)" --dist worksteal -m "not gpu" \
    tests
cat "$WORK/summary.txt"
