#!/usr/bin/env bash
# The mouth-aware training ablation in MODEL_CARD.md. It runs stage II from one stage-I checkpoint,
# once per setting and with the same short budget each time (frozen static head), then scores every
# run on the corpus's held-out identities: same-identity protocol, first 5 s, PSNR, SSIM, mouth tracks
# and our sync expert. The rows go to benchmarks/results/ablation_mouth.json.
#
#   RUNS=DIR bash scripts/ablate_mouth_terms.sh   # DIR holds data/ (scripts/corpus.py preprocess), static/static.ckpt, sync.ckpt
#   RUNS=DIR STEPS=2000 LR=5e-4 NAMES=mouth-weight+lip-loss,mouth-weight+lip-loss+lip-gap,mouth-weight+lip-loss+still \
#     OUT=benchmarks/results/ablation_mouth_long.json bash scripts/ablate_mouth_terms.sh   # the longer runs
#   RUNS=DIR STEPS=1500 LR=5e-4 NAMES=mouth-weight+lip-loss+still+mouth-code,mouth-weight+lip-loss+lip-gap+still+mouth-code \
#     OUT=benchmarks/results/ablation_mouth_code.json bash scripts/ablate_mouth_terms.sh   # the mouth code
set -euo pipefail
cd "$(dirname "$0")/.."
SP=${SP:-.venv/bin/splat-portrait}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/default-model}
STEPS=${STEPS:-400}
LR=${LR:-2e-4}
OUT=${OUT:-benchmarks/results/ablation_mouth.json}
DATA=$RUNS/data
COMMON=(--batch-size 4 --lr "$LR" --lpips-weight 0 --checkpoint-every 250 --seed 0 --freeze-static --steps "$STEPS" --depth-smoothness 0)
IFS=, read -r -a NAMES <<< "${NAMES:-plain-l2,mouth-weight,mouth-weight+lip-loss}"
declare -A SETTINGS=(
  [plain-l2]="--mouth-weight 1 --lip-weight 0"
  [mouth-weight]="--mouth-weight 10 --lip-weight 0"
  [mouth-weight+lip-loss]="--mouth-weight 10 --lip-weight 1"
  [mouth-weight+lip-loss+lip-gap]="--mouth-weight 10 --lip-weight 1 --lip-gap-weight 5"
  [mouth-weight+lip-loss+still]="--mouth-weight 10 --lip-weight 1 --still-weight 0.1"
  [mouth-weight+lip-loss+still+mouth-code]="--mouth-weight 10 --lip-weight 1 --still-weight 0.1 --mouth-code-channels 16 --mouth-code-steps 300"
  [mouth-weight+lip-loss+lip-gap+still+mouth-code]="--mouth-weight 10 --lip-weight 1 --lip-gap-weight 5 --still-weight 0.1 --mouth-code-channels 16 --mouth-code-steps 300"
)
for name in "${NAMES[@]}"; do
  run=$RUNS/ablation/$name
  # shellcheck disable=SC2086
  [ -f "$run/dynamic.ckpt" ] || $SP train-dynamic "$DATA" --init "$RUNS/static/static.ckpt" -o "$run" "${COMMON[@]}" ${SETTINGS[$name]}
  [ -f "$run/eval/metrics.json" ] || $SP evaluate "$DATA" --checkpoint "$run/dynamic.ckpt" -o "$run/eval" --protocol same-identity \
    --seconds 5 --metrics psnr,ssim,mouth,sync --sync "$RUNS/sync.ckpt" --videos 0
done
$PY - "$RUNS" "$STEPS" "$LR" "$OUT" "${NAMES[@]}" <<'PY'
import json, sys
from pathlib import Path
from splat_portrait.environment import run_record
runs, steps, lr, out, names = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]), sys.argv[5:]
rows = {name: json.loads((runs / "ablation" / name / "eval" / "metrics.json").read_text())["aggregate"] for name in names}
record = {"benchmark": "ablation_mouth", "stage_two_steps": steps, "lr": lr, "rows": rows, "record": run_record()}
out.write_text(json.dumps(record, indent=1) + "\n")
print(f"wrote {out}")
PY
