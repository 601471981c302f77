#!/usr/bin/env bash
# Reproduces the bundled default model (splat_portrait/assets/default/) and its MODEL_CARD.md figures.
#
#   bash scripts/train_default_model.sh            # from the repo root, after `make install`
#   VIDEOS=DIR MIRRORS=DIR bash scripts/train_default_model.sh   # videos gathered from local bare clones
#
# Data: the real talking-head corpus of data/corpus.json (scripts/corpus.py gathers its videos and
# checks each SHA-256), at 128x128, split by identity, so no face of the held-out split is trained
# on. Stage I was trained before the corpus grew to its present size: it uses the listing as it was
# at commit 1030af9 (36 clips); stage II uses the listing as it was at commit a11eaa4 (47 clips of
# 43 people, about 10 minutes). The held-out identities of the present listing were held out of both.
#
# Why not the whole present listing (127 clips, 15.6 minutes) for stage II: trained on it with the
# recipe of commit 2dd52c5 (`git show 2dd52c5:scripts/train_default_model.sh`: lip-shape and lip-gap
# losses at 10, then 400 steps with the still-face term at 1), the model scored worse on held-out
# people in mouth r (0.125 against 0.253 on benchmarks/lipsync.py's windows), LMD and PSNR (21.417
# against 21.427), for a little more mouth amplitude in evaluate's clips (0.52 against 0.44); it is
# scored beside this one as "previous" in MODEL_CARD.md.
#
# Stages: stage I (free splats), then a short stage-I fine-tune with the surface footprint and depth
# smoothness (the winners of scripts/ablate_view_terms.sh), then stage II with the static head
# frozen, the landmark lip loss, the still-face term and the mouth code: a 16-wide mouth predictor
# fitted on every real frame first (300 steps, feature noise 0.3), the decoder taught by the frames'
# true codes (scripts/ablate_mouth_terms.sh). Audio features are utterance-normalised and
# loudness-gated (corpus.py's default): the gate scales down only clips whose loudness hardly
# swings (room tone), so every clip of these listings keeps its features bit for bit, and the
# model trained before the gate existed (commit a11eaa4, the weights bundled) is this recipe's
# result; at inference the gate keeps room tone from being stretched into speech. Steps and
# learning rates suit a CPU-only budget of about 1.5 h of training on 2 cores; the paper's 2.5e-5 is
# meant for far longer runs. LPIPS is off because torchvision's VGG16 backbone cannot be downloaded
# on our machines.
set -euo pipefail
cd "$(dirname "$0")/.."
SP=${SP:-.venv/bin/splat-portrait}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/default-model}
VIDEOS=${VIDEOS:-$RUNS/videos}
STAGE_ONE_LISTING=1030af9
STAGE_TWO_LISTING=a11eaa4
COMMON=(--batch-size 4 --lpips-weight 0 --mouth-weight 10)

mirrors=(); [ -n "${MIRRORS:-}" ] && mirrors=(--mirrors "$MIRRORS")
$PY scripts/corpus.py gather -o "$VIDEOS" "${mirrors[@]}"
mkdir -p "$RUNS"
git show "$STAGE_ONE_LISTING:data/corpus.json" > "$RUNS/corpus-stage-one.json"
[ -f "$RUNS/data-stage-one/manifest.jsonl" ] || \
  $PY scripts/corpus.py --listing "$RUNS/corpus-stage-one.json" preprocess "$VIDEOS" -o "$RUNS/data-stage-one" --size 128
git show "$STAGE_TWO_LISTING:data/corpus.json" > "$RUNS/corpus-stage-two.json"
[ -f "$RUNS/data-stage-two/manifest.jsonl" ] || \
  $PY scripts/corpus.py --listing "$RUNS/corpus-stage-two.json" preprocess "$VIDEOS" -o "$RUNS/data-stage-two" --size 128

# Each stage is skipped when its checkpoint exists, so a run cut short can go on in a later session
# (a stage cut short resumes with the same command plus --resume).
[ -f "$RUNS/static/static.ckpt" ] || $SP train-static "$RUNS/data-stage-one" -o "$RUNS/static" --preset small \
  --resolution 128 --steps 1200 --lr 2e-4 --seed 0 --checkpoint-every 200 --footprint 0 --depth-smoothness 0 "${COMMON[@]}"
[ -f "$RUNS/static-views/static.ckpt" ] || $SP train-static "$RUNS/data-stage-one" --init "$RUNS/static/static.ckpt" \
  -o "$RUNS/static-views" --steps 300 --lr 1e-4 --seed 1 --checkpoint-every 1000 --footprint 0.5 --depth-smoothness 0.01 "${COMMON[@]}"
[ -f "$RUNS/dynamic/dynamic.ckpt" ] || $SP train-dynamic "$RUNS/data-stage-two" --init "$RUNS/static-views/static.ckpt" \
  -o "$RUNS/dynamic" --freeze-static --steps 1500 --lr 5e-4 --seed 0 --checkpoint-every 250 --depth-smoothness 0 \
  --lip-weight 1 --still-weight 0.1 --mouth-code-channels 16 --mouth-code-steps 300 --mouth-code-noise 0.3 "${COMMON[@]}"

$SP export "$RUNS/dynamic/dynamic.ckpt" -o splat_portrait/assets/default
bash scripts/evaluate_default_model.sh
