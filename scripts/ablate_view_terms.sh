#!/usr/bin/env bash
# The novel-view ablation in MODEL_CARD.md (issue 15). It fine-tunes one stage-I checkpoint, once per
# setting and with the same short budget each time, then scores every run on the corpus's held-out
# identities (same-identity protocol, first 2 s: PSNR and SSIM at the real target cameras, and the
# bullet-path view metric: faces found, CSIM to the source, tearing) and on the sample portraits
# (benchmarks/views.py). The rows go to benchmarks/results/ablation_views.json.
#
#   RUNS=DIR INIT=CKPT bash scripts/ablate_view_terms.sh   # DIR holds data/ (scripts/corpus.py preprocess)
#
# Rows: the stage-I checkpoint as it is; the same weights with the surface footprint switched on and
# not trained (one step at learning rate 0); then STEPS fine-tuning steps without the footprint, with
# it, with it and the depth-smoothness term, and (when PRIOR names a face denoiser file; one is trained
# on DIR/data with `splat-portrait train-prior` if it does not exist) with both and score distillation
# on the bullet path.
set -euo pipefail
cd "$(dirname "$0")/.."
SP=${SP:-.venv/bin/splat-portrait}
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/default-model}
INIT=${INIT:-$RUNS/static/static.ckpt}
DATA=$RUNS/data
STEPS=${STEPS:-300}
PRIOR=${PRIOR:-}
COMMON=(--batch-size 4 --lpips-weight 0 --mouth-weight 10 --seed 1 --init "$INIT")
NAMES=(stage-I footprint-untrained continue footprint footprint+smooth)
declare -A SETTINGS=(
  [footprint-untrained]="--footprint 0.5 --depth-smoothness 0 --steps 1 --lr 0"
  [continue]="--footprint 0 --depth-smoothness 0 --steps $STEPS --lr 1e-4"
  [footprint]="--footprint 0.5 --depth-smoothness 0 --steps $STEPS --lr 1e-4"
  [footprint+smooth]="--footprint 0.5 --depth-smoothness 0.01 --steps $STEPS --lr 1e-4"
)
if [ -n "$PRIOR" ]; then
  # The face prior, trained on the same frames when it is not there yet (the offline way to get one).
  [ -f "$PRIOR" ] || $SP train-prior "$DATA" -o "$PRIOR" --preset tiny --steps "${PRIOR_STEPS:-1500}" --checkpoint-every 500
  NAMES+=(footprint+sds)
  SETTINGS[footprint+sds]="--footprint 0.5 --depth-smoothness 0.01 --steps $STEPS --lr 1e-4 --prior $PRIOR --sds-weight 1"
fi
for name in "${NAMES[@]}"; do
  run=$RUNS/ablation-views/$name
  mkdir -p "$run"
  if [ "$name" = stage-I ]; then
    ckpt=$INIT
  else
    ckpt=$run/static.ckpt
    # shellcheck disable=SC2086
    [ -f "$ckpt" ] || $SP train-static "$DATA" -o "$run" --checkpoint-every 1000 "${COMMON[@]}" ${SETTINGS[$name]}
  fi
  [ -f "$run/eval/metrics.json" ] || $SP evaluate "$DATA" --checkpoint "$ckpt" -o "$run/eval" --protocol same-identity \
    --seconds 2 --metrics psnr,ssim,views --videos 0
  [ -f "$run/views.json" ] || $PY benchmarks/views.py --model "$ckpt" --json "$run/views.json"
done
$PY - "$RUNS" "$STEPS" "${NAMES[@]}" <<'PY'
import json, statistics, sys
from pathlib import Path
from splat_portrait.environment import run_record
runs, steps, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
rows = {}
for name in names:
    run = runs / "ablation-views" / name
    held_out = json.loads((run / "eval" / "metrics.json").read_text())["aggregate"]
    samples = json.loads((run / "views.json").read_text())["portraits"]
    model = [p["model"] for p in samples.values()]
    rows[name] = {
        "held_out": held_out,
        "samples": {key: statistics.fmean(m[key] for m in model) for key in ("face_found", "csim", "tearing_mean", "tearing_worst")},
    }
out = Path("benchmarks/results/ablation_views.json")
out.write_text(json.dumps({"benchmark": "ablation_views", "fine_tune_steps": steps, "rows": rows, "record": run_record()}, indent=1) + "\n")
print(f"wrote {out}")
PY
