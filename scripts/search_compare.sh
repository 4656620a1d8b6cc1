#!/usr/bin/env bash
# The search against random genotypes and the baselines a practitioner would try first, all at TPSR's MACs (the
# search's target) and all retrained by configs/compare_cpu.yaml. Steps, in order; each resumable and split between
# processes by I/N (one per core, OMP_NUM_THREADS=1):
#   bash scripts/search_compare.sh searches VARIANT I/N   # search seeds 0, 1, 2 of a search_sweep.sh variant and a
#                                                         # 2-thread rerun of seed 0 (stability), each with its tau
#   bash scripts/search_compare.sh baselines I/N          # darts-sr baselines, best of 20 by a 300-step proxy
#   bash scripts/search_compare.sh compare VARIANT I/N    # 3 searched x 2 seeds, 20 random, 4 baselines x 2, TPSR x 3
#   bash scripts/search_compare.sh report VARIANT         # tables and statistics from the records alone
# The random genotypes are those of the calibration's matched ladder and rank-check's samples (same window, space
# and seed), so their seed-0 trainings are copied from those records, as are TPSR's seeds 0 and 1 (the width ladder's
# 16-channel rung).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
tpsr_macs=3574886400  # TPSR's MACs@720p: search_cpu's target, and the window calibrate and rank-check draw in
baselines=results/search_compare/baselines  # paths under the repo root, as the records name them

shard_of() {  # shard_of K I/N: is item K this process's?
  local i="${2%/*}" n="${2#*/}"
  (($1 % n == i))
}

searches() {
  local variant="$1" shard="$2" k=0
  for seed in 0 1 2; do
    if shard_of $k "$shard"; then SEED=$seed bash "$root/scripts/search_sweep.sh" "$variant"; fi
    k=$((k + 1))
  done
  # The same search on two threads: the folder is seed0_t2 (search_sweep.sh names it by OMP_NUM_THREADS).
  if shard_of $k "$shard"; then SEED=0 OMP_NUM_THREADS=2 bash "$root/scripts/search_sweep.sh" "$variant"; fi
}

run_baselines() {
  (cd "$root" && "$py" -m darts_sr baselines --out "$baselines" --best-of-k 20 --proxy-config configs/compare_cpu.yaml \
    --proxy-set pixel_phase.steps=300 --proxy-set val_every=300 --shard "$1")
}

compare() {
  local variant="$1" shard="$2" runs=() seeds=()
  for seed in 0 1 2; do
    runs+=("results/search_sweep/$variant/seed$seed")
    seeds+=(--seeds "searched_$seed=2")
  done
  local base=()
  for name in shallow_wide deep_chain most_params best_of_20; do
    [[ -f $root/$baselines/$name.json ]] || { echo "error: $baselines/$name.json missing: run the baselines step" >&2; exit 2; }
    base+=(--baseline "$baselines/$name.json" --seeds "baseline_$name=2")
  done
  # Another variant's comparison holds the same random, baseline and TPSR trainings: copied, not retrained.
  local reuse=()
  for other in "$root"/results/search_compare/*/experiment.json; do
    other="$(dirname "${other#"$root"/}")"
    [[ $other == "results/search_compare/$variant" ]] || reuse+=(--reuse "$other")
  done
  (cd "$root" && "$py" -m darts_sr compare --search-runs "${runs[@]}" "${base[@]}" "${seeds[@]}" --seeds tpsr=3 \
    --random 20 --target-macs "$tpsr_macs" --config configs/compare_cpu.yaml --out "results/search_compare/$variant" \
    --work runs/search_compare/"$variant" --reuse results/calibration/p48_b4_12k --reuse results/rank_check "${reuse[@]}" \
    --shard "$shard")
}

case "${1:-}" in
  searches) searches "${2:?variant}" "${3:-0/1}" ;;
  baselines) run_baselines "${2:-0/1}" ;;
  compare) compare "${2:?variant}" "${3:-0/1}" ;;
  report) (cd "$root" && "$py" -m darts_sr compare --report "results/search_compare/${2:?variant}") ;;
  *) echo "usage: search_compare.sh searches VARIANT I/N | baselines I/N | compare VARIANT I/N | report VARIANT" >&2
     exit 2 ;;
esac
