#!/usr/bin/env bash
# Reproduces the bundled default model (splat_portrait/assets/default/) and its MODEL_CARD.md figures.
#
#   bash scripts/train_default_model.sh            # from the repo root, after `make install`
#
# Data: the real sample clips in ../shared/data/videos (preprocessed by our own `preprocess`) plus
# 24 synthetic clips (with synthetic voiced sound, so the result does not depend on whether espeak-ng
# is installed), all at 128x128, in one data folder. The split is the layout's id hash
# (test fraction 0.25), so the held-out clips are the same on every machine.
# Steps and learning rate suit a CPU-only budget of about an hour on 2 cores; the paper's
# 2.5e-5 is meant for far longer runs. LPIPS is off because torchvision's VGG16 backbone
# cannot be downloaded on our machines (see README). The bundled model predates mouth-aware training
# (off by default) and per-utterance feature normalisation, so un-normalised features are asked for;
# it also predates the room tone in synthetic pauses (commit 127eeb2): its exact figures come from a
# checkout before that commit. It also predates the surface footprint and the depth-smoothness term
# (both on by default now, see README "Novel views"), so they are switched off here.
set -euo pipefail
cd "$(dirname "$0")/.."
SP=${SP:-.venv/bin/splat-portrait}
SHARED=${SHARED:-../shared/data}
RUNS=${RUNS:-runs/default-model}
DATA=$RUNS/data
STATIC_STEPS=${STATIC_STEPS:-1200}
DYNAMIC_STEPS=${DYNAMIC_STEPS:-800}
COMMON=(--batch-size 4 --lr 2e-4 --lpips-weight 0 --checkpoint-every 250 --seed 0 --depth-smoothness 0)

$SP preprocess "$SHARED/videos" -o "$DATA" --size 128 --test-fraction 0.25 --audio-norm none
$SP synth -o "$DATA" --clips 24 --seconds 5 --size 128 --seed 0 --test-fraction 0.25 --speech voiced --audio-norm none

$SP train-static "$DATA" -o "$RUNS/static" --preset small --footprint 0 --resolution 128 --steps "$STATIC_STEPS" "${COMMON[@]}"
$SP train-dynamic "$DATA" --init "$RUNS/static/static.ckpt" -o "$RUNS/dynamic" --steps "$DYNAMIC_STEPS" "${COMMON[@]}"

$SP export "$RUNS/dynamic/dynamic.ckpt" -o splat_portrait/assets/default
for baseline in "" "--baseline copy-source"; do
  # shellcheck disable=SC2086
  $SP evaluate "$DATA" --checkpoint "$RUNS/dynamic/dynamic.ckpt" -o "$RUNS/eval${baseline:+-copy-source}" \
    --protocol same-identity --seconds 5 --metrics psnr,ssim,lpips,csim,fid,lipsync,mouth $baseline
done
