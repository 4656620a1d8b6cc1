#!/usr/bin/env bash
# The yardstick's recipe sweep (darts-sr calibrate), as committed records: every command skips what is recorded, so
# the sweep resumes anywhere. Two processes share it, one per core:
#   OMP_NUM_THREADS=1 bash scripts/calibration_sweep.sh 0/2 &  OMP_NUM_THREADS=1 bash scripts/calibration_sweep.sh 1/2
# Jobs named after the shard run instead of the queue, e.g. one core on the long recipe alone:
#   OMP_NUM_THREADS=1 bash scripts/calibration_sweep.sh 0/1 "p48_b4_18k matched 1"
set -euo pipefail
shard="${1:-0/1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
results="${RESULTS:-$root/results/calibration}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

# name: overrides of configs/compare_cpu_short.yaml, the first recipe (pixel phase only; T91 + BSD200 less the holdout and duplicates).
declare -A RECIPE=(
  [short]=""
  [p48_b4_6k]="data.patch_size=48 data.batch_size=4 pixel_phase.steps=6000 val_every=1000"
  [p64_b4_5k_ema]="data.patch_size=64 data.batch_size=4 pixel_phase.steps=5000 val_every=1000 pixel_phase.ema=0.999 pixel_phase.warmup_steps=250"
  [p48_b8_5k_ema]="data.patch_size=48 data.batch_size=8 pixel_phase.steps=5000 val_every=1000 pixel_phase.ema=0.999 pixel_phase.warmup_steps=250"
  [p32_b16_6k_ema]="data.patch_size=32 data.batch_size=16 pixel_phase.steps=6000 val_every=1000 pixel_phase.ema=0.999 pixel_phase.warmup_steps=250"
  [p48_b4_12k]="data.patch_size=48 data.batch_size=4 pixel_phase.steps=12000 val_every=2000"
  # The long recipes the chosen one is validated against on the matched ladder (3x and 4x p48_b4_6k's compute).
  [p48_b4_18k]="data.patch_size=48 data.batch_size=4 pixel_phase.steps=18000 val_every=2000"
  [p48_b4_24k]="data.patch_size=48 data.batch_size=4 pixel_phase.steps=24000 val_every=2000"
  [p48_b4_36k]="data.patch_size=48 data.batch_size=4 pixel_phase.steps=36000 val_every=4000"  # 3x p48_b4_12k
)
# The queue, in order: a cheap screen of each recipe on the cost ladder (one seed), then the width ladder (two seeds)
# of the recipes that look best. "recipe ladder seeds" per line; a job's trials are split between the shards.
QUEUE=(
  "short cost 1"
  "p48_b4_6k cost 1"
  "p64_b4_5k_ema cost 1"
  "p48_b8_5k_ema cost 1"
  "p48_b4_6k width 2"
  "p64_b4_5k_ema width 2"
  "p48_b4_6k matched 2"
  "p48_b4_18k matched 1"
  "short width 2"
  "p32_b16_6k_ema cost 1"
  "p48_b4_12k cost 1"
  "p48_b4_12k width 2"
  "p48_b4_12k matched 2"
  "p48_b4_36k matched 1"
)

run() {  # run NAME LADDER SEEDS
  local name="$1" ladder="$2" seeds="$3"
  local sets=(--set gan_phase.steps=0 --set data.skip_small=true)
  for kv in ${RECIPE[$name]}; do sets+=(--set "$kv"); done
  (cd "$root" && "$py" -m darts_sr.experiments.calibrate --config compare_cpu_short "${sets[@]}" --ladder "$ladder" \
      --seeds "$seeds" --ladders "$results/ladders" --out "$results/$name" --reuse "$results/$name" --shard "$shard")
}

shift || true
if (($#)); then QUEUE=("$@"); fi
for job in "${QUEUE[@]}"; do run $job; done
