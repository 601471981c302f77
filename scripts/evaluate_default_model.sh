#!/usr/bin/env bash
# Scores the bundled default model (splat_portrait/assets/default/, run with ONNX Runtime exactly as
# `animate` runs it), the model it was preferred over and the copy-source baseline on the held-out identities
# of the default model's data, and writes benchmarks/results/default_model.json, from which
# scripts/figures.py makes MODEL_CARD.md's evaluation table.
#
#   bash scripts/evaluate_default_model.sh        # from the repo root, after `make install` (about 25 min on 2 cores)
#
# The data is made as scripts/train_default_model.sh makes it (the corpus of data/corpus.json, split
# by identity), so the held-out clips are of people the model never trained on.
set -euo pipefail
cd "$(dirname "$0")/.."
SP=${SP:-.venv/bin/splat-portrait}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/default-model}
VIDEOS=${VIDEOS:-$RUNS/videos}
DATA=$RUNS/data
# The commit of the model this one was preferred over (the same static head; stage II on the whole
# 127-clip listing, lip-shape and lip-gap losses at 10; see scripts/train_default_model.sh).
PREVIOUS=2dd52c5

mirrors=(); [ -n "${MIRRORS:-}" ] && mirrors=(--mirrors "$MIRRORS")
$PY scripts/corpus.py gather -o "$VIDEOS" "${mirrors[@]}"  # brings only what is missing or changed
[ -f "$DATA/manifest.jsonl" ] || $PY scripts/corpus.py preprocess "$VIDEOS" -o "$DATA" --size 128
mkdir -p "$RUNS/previous-model"
git archive "$PREVIOUS" splat_portrait/assets/default | tar -x -C "$RUNS/previous-model"
for method in model previous copy-source; do
  case $method in
    model) args=("$DATA" --model splat_portrait/assets/default) ;;
    previous) args=("$DATA" --model "$RUNS/previous-model/splat_portrait/assets/default") ;;
    copy-source) args=("$DATA" --model splat_portrait/assets/default --baseline copy-source) ;;
  esac
  # The previous model and the baseline do not change: scored once.
  [ "$method" != model ] && [ -f "$RUNS/eval-bundled-$method/metrics.json" ] && continue
  $SP evaluate "${args[@]}" -o "$RUNS/eval-bundled-$method" --protocol same-identity --seconds 5 \
    --metrics psnr,ssim,csim,mouth --videos 0
done
$PY - "$RUNS" <<'PY'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
reports = {key: json.loads((runs / f"eval-bundled-{method}" / "metrics.json").read_text())
           for key, method in (("model", "model"), ("previous", "previous"), ("copy_source", "copy-source"))}
out = Path("benchmarks/results/default_model.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(reports, indent=1) + "\n")
print(f"wrote {out}")
PY
