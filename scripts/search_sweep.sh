#!/usr/bin/env bash
# The search, trained where the yardstick measures: searches of configs/search_cpu.yaml at the calibrated recipe's
# patch regime and at several lengths, each judged by rank-check's Kendall tau against configs/compare_cpu.yaml
# (standalone retraining, 12 genotypes at the search's target MACs). Resumable anywhere: a finished variant's
# results/search_sweep/NAME/seedK/ is skipped, an interrupted search continues from its checkpoint,
# and the standalone trainings are trial records shared by every variant (results/rank_check, keyed by trial;
# calibrate's 12k matched ladder trains the first ten of the same genotypes and is reused).
#   OMP_NUM_THREADS=1 bash scripts/search_sweep.sh standalone 0/2 & OMP_NUM_THREADS=1 bash scripts/search_sweep.sh standalone 1/2
#   OMP_NUM_THREADS=1 bash scripts/search_sweep.sh p48_720 p48_2160      # searches, one per core, then their tau
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
seed="${SEED:-0}"
samples=12

# name: overrides of configs/search_cpu.yaml. Today's search sees 16-px LR patches, about TPSR's receptive radius;
# the calibrated recipe trains on 48-px ones (images smaller than that left out, as there). Lengths in epochs of 60
# steps (12 = today's 720 steps), warm-up a quarter of them. One 48-px step costs 783 ms against 446 ms at 16 px
# (bench/search_step.py, one thread, generator loss only, other jobs paused, load 1.0-1.1): 720 steps are about
# 10 minutes of stepping, 7200 about 95.
declare -A VARIANT=(
  [p16_720]=""
  [p48_720]="data.patch_size=48 data.batch_size=4 data.skip_small=true"
  [p48_2160]="data.patch_size=48 data.batch_size=4 data.skip_small=true optim.epochs=36 optim.warmup_epochs=9"
  [p48_7200]="data.patch_size=48 data.batch_size=4 data.skip_small=true optim.epochs=120 optim.warmup_epochs=30"
  [p48_2160_sampled]="data.patch_size=48 data.batch_size=4 data.skip_small=true optim.epochs=36 optim.warmup_epochs=9 supernet.strategy=sampled"
)
rank_check=("$py" -m darts_sr.experiments.rank_check --samples "$samples" --recipe "$root/configs/compare_cpu.yaml"
            --reuse "$root/results/calibration/p48_b4_12k")

standalone() {  # the standalone side alone, split between processes; a search run's config names the samples
  local run="${1:?a search run folder whose target the samples match}" shard="$2"
  (cd "$root" && "${rank_check[@]}" "$run" --only-standalone --shard "$shard")
}

variant() {
  local tag="seed$seed"
  [[ $OMP_NUM_THREADS == 1 ]] || tag+="_t$OMP_NUM_THREADS"  # a rerun on more threads: is it the same network?
  local name="$1" out="$root/runs/search_sweep/$1/$tag" res="$root/results/search_sweep/$1/$tag"
  [[ -v VARIANT[$name] ]] || { echo "error: no search variant '$name' (scripts/search_sweep.sh: ${!VARIANT[*]})" >&2; exit 2; }
  if [[ -f $res/history.json ]]; then echo "$name $tag: recorded in $res"; return; fi
  local sets=(--seed "$seed" --offline)
  for kv in ${VARIANT[$name]}; do sets+=(--set "$kv"); done
  if [[ ! -f $out/genotype_generator.json ]]; then
    local again=(); [[ -f $out/checkpoints/last.pt ]] && again=(--resume)
    (cd "$root" && "$py" -m darts_sr search --config configs/search_cpu.yaml --out "$out" "${sets[@]}" "${again[@]}")
  fi
  (cd "$root" && "${rank_check[@]}" "$out")
  # search-report copies summary, config, genotype and rank_check, history last: history.json marks it whole.
  (cd "$root" && "$py" -m darts_sr.experiments.search_report "$out" --save "$(dirname "$res")" >/dev/null)
}

# The samples depend only on the search space and target, which every variant shares with this committed run.
if [[ ${1:-} == standalone ]]; then standalone "${3:-$root/results/search_ablation/mixed_norm_lr03}" "${2:-0/1}"; exit; fi
(($#)) || { echo "usage: search_sweep.sh VARIANT... | standalone I/N [RUN]  (variants: ${!VARIANT[*]})" >&2; exit 2; }
for name in "$@"; do variant "$name"; done
