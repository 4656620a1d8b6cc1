#!/usr/bin/env bash
# The yardstick's recipe sweep (darts_sr.experiments.calibrate), as committed records: every command skips what is recorded, so
# the sweep resumes anywhere. Two processes share it, one per core:
#   OMP_NUM_THREADS=1 bash scripts/calibration_sweep.sh 0/2 &  OMP_NUM_THREADS=1 bash scripts/calibration_sweep.sh 1/2
# STAGE=screen (default): the cost ladder, one seed, for every recipe; STAGE=confirm RECIPES="a b": both ladders,
# two seeds, for the recipes that passed the screen.
set -euo pipefail
shard="${1:-0/1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
results="${RESULTS:-$root/results/calibration}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

# name: overrides of configs/compare_cpu.yaml (pixel phase only; T91 + BSD200 less the holdout and duplicates).
declare -A RECIPE=(
  [short]=""
  [p48_b4_6k]="data.patch_size=48 data.batch_size=4 pixel_phase.steps=6000 val_every=1000"
  [p64_b4_5k_ema]="data.patch_size=64 data.batch_size=4 pixel_phase.steps=5000 val_every=1000 pixel_phase.ema=0.999 pixel_phase.warmup_steps=250"
  [p48_b8_5k_ema]="data.patch_size=48 data.batch_size=8 pixel_phase.steps=5000 val_every=1000 pixel_phase.ema=0.999 pixel_phase.warmup_steps=250"
  [p32_b16_6k_ema]="data.patch_size=32 data.batch_size=16 pixel_phase.steps=6000 val_every=1000 pixel_phase.ema=0.999 pixel_phase.warmup_steps=250"
  [p48_b4_12k]="data.patch_size=48 data.batch_size=4 pixel_phase.steps=12000 val_every=2000"
)
ORDER=(short p48_b4_6k p64_b4_5k_ema p48_b8_5k_ema p32_b16_6k_ema p48_b4_12k)

run() {  # run NAME LADDER-ARGS...
  local name="$1"; shift
  local sets=(--set gan_phase.steps=0 --set data.skip_small=true)
  for kv in ${RECIPE[$name]}; do sets+=(--set "$kv"); done
  (cd "$root" && "$py" -m darts_sr.experiments.calibrate --config compare_cpu "${sets[@]}" "$@" \
      --ladders "$results/ladders" --out "$results/$name" --shard "$shard")
}

case "${STAGE:-screen}" in
  screen) for name in "${ORDER[@]}"; do run "$name" --ladder cost --seeds 1; done ;;
  confirm) for name in ${RECIPES:?RECIPES=\"name ...\"}; do run "$name" --ladder cost --ladder width --seeds 2; done ;;
  *) echo "STAGE must be screen or confirm" >&2; exit 2 ;;
esac
