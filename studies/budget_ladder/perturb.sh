#!/usr/bin/env bash
# The ladder's perturbation studies (docs/results.md, "The budget ladder"): at each finished transect, 128
# random points within +-0.25 decades of its centre moved by eps = 1e-7 .. 1e-2 decades (the uncertainty
# exponent), and 64 of its points with the learning rate moved by 1e-7 and in float64 (the precision floor).
# Resumable like run.sh; wall times go to $OUT/wall_times.tsv.
#   bash studies/budget_ladder/perturb.sh
#   PARTS="centre_constant_seed0_T20" POINTS=32 bash studies/budget_ladder/perturb.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
FL=${FL:-.venv/bin/fractal-llm}
OUT=${OUT:-runs/budget_ladder}
WORKERS=${WORKERS:-2}
export WANDB_MODE=${WANDB_MODE:-disabled}  # the records are the results; an offline W&B run per point costs 0.05-0.5 s
POINTS=${POINTS:-128}
WINDOW=${WINDOW:-}  # half-width in decades (default: half the line); the uncertainty runs alone go to perturb_wWINDOW
PARTS=${PARTS:-"centre_constant_seed0_T20 centre_constant_seed0_T40 centre_constant_seed0_T80
  mid_constant_seed0_T20 mid_constant_seed0_T40 mid_constant_seed0_T80 centre_constant_seed0_T160 mid_constant_seed0_T160"}
for part in $PARTS; do
  line="$OUT/${part%%_*}/${part#*_}"
  [ -f "$line/report/report.json" ] || { echo "$part: its transect is not finished; skipped"; continue; }
  start=$(date +%s)
  if [ -n "$WINDOW" ]; then  # a narrower window around the border: the uncertainty exponent only
    study="$OUT/perturb_w$WINDOW/$part"
    "$FL" perturb "$line" --out "$study" --points "$POINTS" --window "$WINDOW" --rounding-sample 0 --workers "$WORKERS"
  else
    study="$OUT/perturb/$part"
    "$FL" perturb "$line" --out "$study" --points "$POINTS" --workers "$WORKERS"
  fi
  printf '%s\t%s\t%s\n' "perturb${WINDOW:+_w$WINDOW}_$part" "$(( $(date +%s) - start ))" "$(date -u +%FT%TZ)" >> "$OUT/wall_times.tsv"
done
