#!/usr/bin/env bash
# Scores the bundled default model (splat_portrait/assets/default/, run with ONNX Runtime exactly as
# `animate` runs it) and the copy-source baseline on the held-out clips of the default model's data,
# and writes benchmarks/results/default_model.json, from which scripts/figures.py makes MODEL_CARD.md's
# evaluation table (real and synthetic clips in separate rows).
#
#   bash scripts/evaluate_default_model.sh        # from the repo root, after `make install` (about 5 min on 2 cores)
#
# The data is made as scripts/train_default_model.sh makes it (same clips, same id-hash split), so the
# held-out clips are the ones the model never trained on.
set -euo pipefail
cd "$(dirname "$0")/.."
SP=${SP:-.venv/bin/splat-portrait}
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared/data}
RUNS=${RUNS:-runs/default-model}
DATA=$RUNS/data
MODEL=splat_portrait/assets/default

$SP preprocess "$SHARED/videos" -o "$DATA" --size 128 --test-fraction 0.25 --audio-norm none
$SP synth -o "$DATA" --clips 24 --seconds 5 --size 128 --seed 0 --test-fraction 0.25 --speech voiced --audio-norm none
for method in model copy-source; do
  baseline=(); [ "$method" = copy-source ] && baseline=(--baseline copy-source)
  $SP evaluate "$DATA" --model "$MODEL" -o "$RUNS/eval-bundled-$method" --protocol same-identity --seconds 5 \
    --metrics psnr,ssim,csim --videos 0 "${baseline[@]}"
done
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
