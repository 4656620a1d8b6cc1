#!/usr/bin/env bash
# Stage 2 judged where discriminators differ: from the published TPSR_NOGAN generator, on configs/gan_finetune_cpu.yaml's
# 500-step recipe (EMA 0.99, cosine to 1e-6, the lowest holdout NIQE at or above 27.0 dB kept). Steps, each resumable
# (a finished step's results folder is skipped; an interrupted search or fine-tune continues), one process per core:
#   bash scripts/stage2_judged.sh supernet SEED   # the discriminator supernet (search_cpu's stage 2) on TPSR_NOGAN
#   bash scripts/stage2_judged.sh race            # configs/race_finetune_cpu.yaml: reference + 5 random, seeds grow
#   bash scripts/stage2_judged.sh compare I/N     # the picks, SRGAN's and ESRGAN's discriminators, 4 random; 2 seeds;
#                                                 # TPSR's published GAN models (TPSR_D2, TPSR_ESRGAN) scored beside
#   bash scripts/stage2_judged.sh report
#   bash scripts/stage2_judged.sh pipeline-pixel  # our searched generator, pixel-trained (see below), then
#   bash scripts/stage2_judged.sh pipeline I/N    # the same fine-tunes from it
# Results (small files, committed): results/stage2_judged/{supernet_seedK,race}/ (config, genotype, summary or race
# log) and the comparison's records in results/gan_stage2/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
published=../shared/anchors/tpsr/weights  # TPSR's weights: the start (NOGAN) and its two GAN models, scored beside
weights=$published/TPSR_NOGANX4.pt
res=results/stage2_judged
# The fine-tune of the comparison, as configs/race_finetune_cpu.yaml's race_recipe_set makes it for the race.
recipe=(--config configs/gan_finetune_cpu.yaml --set discriminator.base_width=null --set gan_phase.steps=500
        --set gan_phase.ema=0.99 --set gan_phase.lr_min=0.000001 --set gan_phase.keep=lowest_niqe
        --set gan_phase.psnr_floor=27.0)

picks=("$res/supernet_seed0" "$res/supernet_seed1" "$res/race")  # their order names them: searched_0, _1, _2
need_picks() {  # need_picks WHAT: every pick's step finished, else a one-line error
  for run in "${picks[@]}"; do
    [[ -f $root/$run/genotype_discriminator.json ]] || { echo "error: $run: not finished; $1" >&2; exit 2; }
  done
}

keep() {  # keep FROM TO FILE...: the run's small files, the genotype last (its presence marks the step done)
  local from="$1" to="$2"; shift 2
  mkdir -p "$root/$to.tmp"
  for f in "$@"; do cp "$root/$from/$f" "$root/$to.tmp/"; done
  cp "$root/$from/genotype_discriminator.json" "$root/$to.tmp/"
  rm -rf "${root:?}/$to" && mv "$root/$to.tmp" "$root/$to"
}

supernet() {
  local seed="$1" out="runs/stage2_judged/supernet_seed$1"
  if [[ -f $root/$res/supernet_seed$seed/genotype_discriminator.json ]]; then echo "supernet seed $seed: in $res"; return; fi
  local again=(); [[ -f $root/$out/checkpoints/discriminator_last.pt ]] && again=(--resume)
  # search_cpu's stage 2 (space, objective, 6 x 20 steps), its generator trained as the fine-tune trains it: 32-px LR
  # patches, batch 8, adversarial 0.005, Adam 1e-4 (cosine to 1e-6) for generator and discriminator; validated on
  # whole holdout images, comparable with TPSR_NOGAN's 28.14 dB there.
  (cd "$root" && "$py" -m darts_sr search --stage discriminator --generator tpsr --config configs/search_cpu.yaml \
    --set "stage2.generator_weights=$weights" --set data.patch_size=32 --set data.batch_size=8 --set data.skip_small=true \
    --set data.val_crop=0 --set stage2.macs_size=128 --set stage2.adversarial=0.005 --set stage2.generator_lr=0.0001 \
    --set stage2.generator_lr_min=0.000001 --set stage2.d_lr=0.0001 --seed "$seed" --offline --out "$out" "${again[@]}")
  keep "$out" "$res/supernet_seed$seed" config.yaml summary_discriminator.json
}

race() {
  local out=runs/stage2_judged/race
  if [[ -f $root/$res/race/genotype_discriminator.json ]]; then echo "race: in $res"; return; fi
  local again=(); [[ -f $root/$out/race_discriminator.json ]] && again=(--resume)
  (cd "$root" && "$py" -m darts_sr search --stage discriminator --method race --generator tpsr \
    --config configs/race_finetune_cpu.yaml --offline --out "$out" "${again[@]}")
  keep "$out" "$res/race" config.yaml race_discriminator.json
}

compare() {
  # The picks in a fixed order (their names, searched_<i>, follow it): a pick not finished yet is left out of this
  # pass, said so, and joins when compare is run again after its step; the report refuses until all are in.
  local runs=() reuse=()
  for run in "${picks[@]}"; do
    if [[ -f $root/$run/genotype_discriminator.json ]]; then runs+=("$run")
    else echo "note: $run not finished: its pick is not in this pass; run compare again after it" >&2; break; fi
  done
  # The race's fine-tunes are this comparison's trials of the same discriminators and seeds: scored in their folders.
  for rung in "$root"/runs/stage2_judged/race/race/rung*; do [[ -d $rung ]] && reuse+=(--reuse "${rung#"$root"/}"); done
  (( ${#runs[@]} )) || { echo "error: $res/supernet_seed0: run the supernet step first" >&2; exit 2; }
  (cd "$root" && "$py" -m darts_sr compare-discriminators "${recipe[@]}" --init "$weights" --search-runs "${runs[@]}" \
    --discriminator esrgan_body --random 4 --train-seeds 2 --out results/gan_stage2 --work runs/gan_stage2 \
    --published "TPSR_D2=$published/TPSR_D2X4.pt" --published "TPSR_ESRGAN=$published/TPSR_ESRGANX4.pt" \
    "${reuse[@]}" --shard "$1")
}

report() {
  need_picks "the report needs every pick"
  (cd "$root" && "$py" -m darts_sr compare-discriminators --report results/gan_stage2)
}

# The whole pipeline (issue 23, part 4): the searched generator with the best holdout score in the calibrated
# comparison (results/search_compare/p16_720: search seed 2's genotype), pixel-trained on compare_cpu as that
# comparison trained it (seed 0: the same trial, so its record there says what to expect), then fine-tuned as above
# against the three picks and SRGAN's reference, two seeds.
searched=results/search_sweep/p16_720/seed2
pixel=runs/stage2_judged/pipeline_pixel
pipeline_pixel() {  # one process: the comparison's searched_0 (its shard 0/2; shard 1/2 would be TPSR's)
  (cd "$root" && "$py" -m darts_sr compare --config compare_cpu --search-runs $searched --random 0 --train-seeds 1 \
    --out $pixel/records --work $pixel/work --shard 0/2)
}
pipeline() {
  [[ -f $root/$pixel/records/searched_0_seed0.json ]] || { echo "error: $pixel: run pipeline-pixel first" >&2; exit 2; }
  need_picks "run the supernet and race steps first"
  (cd "$root" && "$py" -m darts_sr compare-discriminators "${recipe[@]}" --generator $searched/genotype_generator.json \
    --init $pixel/work/searched_0_seed0/model_pixel.pt --search-runs "${picks[@]}" \
    --random 0 --train-seeds 2 --out results/gan_pipeline --work runs/gan_pipeline --shard "$1")
}

case "${1:-}" in
  supernet) supernet "${2:?seed}" ;;
  race) race ;;
  compare) compare "${2:-0/1}" ;;
  report) report ;;
  pipeline-pixel) pipeline_pixel ;;
  pipeline) pipeline "${2:-0/1}" ;;
  *) echo "usage: stage2_judged.sh supernet SEED | race | compare I/N | report | pipeline-pixel | pipeline I/N" >&2; exit 2 ;;
esac
