#!/usr/bin/env bash
# Scores the bundled default model (splat_portrait/assets/default/, run with ONNX Runtime exactly as
# `animate` runs it) and the copy-source baseline on the held-out identities of the default model's
# data, and writes benchmarks/results/default_model.json (PSNR, SSIM, CSIM, mouth tracks and our sync
# expert's offset), benchmarks/results/lipsync.json and benchmarks/results/sync_expert.json, from which
# scripts/figures.py makes MODEL_CARD.md's tables.
#
#   bash scripts/evaluate_default_model.sh        # after scripts/train_default_model.sh (about 10 min on 2 cores)
#
# The data and the sync expert are those scripts/train_default_model.sh made (same corpus, same
# identity split), so the held-out people are ones the model never trained on.
set -euo pipefail
cd "$(dirname "$0")/.."
SP=${SP:-.venv/bin/splat-portrait}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/default-model}
VIDEOS=${VIDEOS:-$RUNS/videos}
DATA=$RUNS/data
SYNC=$RUNS/sync.ckpt
MODEL=splat_portrait/assets/default

for method in model copy-source; do
  baseline=(); [ "$method" = copy-source ] && baseline=(--baseline copy-source)
  $SP evaluate "$DATA" --model "$MODEL" -o "$RUNS/eval-bundled-$method" --protocol same-identity --seconds 5 \
    --metrics psnr,ssim,csim,mouth,sync --sync "$SYNC" --videos 0 "${baseline[@]}"
done
$PY benchmarks/lipsync.py --videos "$VIDEOS" --model "$MODEL" --sync "$SYNC" --json benchmarks/results/lipsync.json
$PY benchmarks/sync_expert.py "$SYNC" "$DATA" --json benchmarks/results/sync_expert.json
$PY - "$RUNS" <<'PY'
import json, sys
from pathlib import Path
runs = Path(sys.argv[1])
reports = {key: json.loads((runs / f"eval-bundled-{method}" / "metrics.json").read_text())
           for key, method in (("model", "model"), ("copy_source", "copy-source"))}
out = Path("benchmarks/results/default_model.json")
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(reports, indent=1) + "\n")
print(f"wrote {out}")
PY
