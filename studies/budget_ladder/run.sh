#!/usr/bin/env bash
# The budget ladder (docs/results.md, "The budget ladder"): 512-point transects through the border, found
# again at each budget by bisection, at T = 20, 40, 80, 160 steps, constant and cosine schedules, data-order
# seeds 0 and 1. Steps of 0.001 decades: spacings 0.001 .. 0.256 decades; a part named ..._fine runs the same
# line ten times finer (1e-4 .. 0.0256 decades). Two locations:
# - centre: the 20-step study's centre on the tiny base (both sides of its border fail): along matrix LR,
#   the border found by bisecting unembedding LR at matrix_lr = 5.94557, in smoke_band32's window;
# - mid: the mid-trained tiny base (tiny-mid), whose trainable side trains well: along unembedding LR through
#   matrix_lr = 0.02, the border found on that line, in smoke_mid's window.
# Every part trains with the compiled step (compile=compiled: 0.7x an eager step on CPU, docs/design.md), so
# no part mixes the two arithmetics. Every part resumes from its records (a re-run trains nothing twice) and
# logs its wall time to $OUT/wall_times.tsv.
#   bash studies/budget_ladder/run.sh                      # every part, in order of priority
#   PARTS="centre_constant_seed0_T20" bash studies/budget_ladder/run.sh
#   bash studies/budget_ladder/run.sh pack                 # records -> studies/budget_ladder/records.tar.gz
set -euo pipefail
cd "$(dirname "$0")/../.."
FL=${FL:-.venv/bin/fractal-llm}
OUT=${OUT:-runs/budget_ladder}
WORKERS=${WORKERS:-2}
export WANDB_MODE=${WANDB_MODE:-disabled}  # the records are the results; an offline W&B run per point costs 0.05-0.5 s
PARENTS=studies/budget_ladder/parents
DEFAULT_PARTS="centre_constant_seed0_T20 centre_constant_seed0_T40 centre_constant_seed0_T80
  centre_cosine_seed0_T20 centre_cosine_seed0_T40 centre_cosine_seed0_T80
  mid_constant_seed0_T20 mid_constant_seed0_T40 mid_constant_seed0_T80
  centre_constant_seed0_T20_fine centre_constant_seed0_T40_fine centre_constant_seed0_T80_fine
  centre_constant_seed0_T160 mid_constant_seed0_T160 centre_cosine_seed0_T160 centre_constant_seed0_T160_fine
  centre_constant_seed1_T20 centre_constant_seed1_T40 centre_constant_seed1_T80 centre_constant_seed1_T160
  mid_cosine_seed0_T20 mid_cosine_seed0_T40 mid_cosine_seed0_T80 mid_cosine_seed0_T160"
PARTS=${PARTS:-$DEFAULT_PARTS}
RECORDS=studies/budget_ladder/records.tar.gz  # the records between machines and sessions (runs/ is git-ignored)
if [ "${1:-}" = pack ]; then  # bash studies/budget_ladder/run.sh pack
  tar czf "$RECORDS" --exclude=wandb --exclude='*.claim' --exclude='.claims.lock' -C "$(dirname "$OUT")" \
    "$(basename "$OUT")"
  exit 0
fi
[ -d "$OUT" ] || [ ! -f "$RECORDS" ] || tar xzf "$RECORDS" -C "$(dirname "$OUT")"
mkdir -p "$PARENTS" "$OUT"

parent() {  # parent sweep of one part: the location's window and settings at this schedule, seed and budget
  local location=$1 schedule=$2 seed=$3 steps=$4 model window
  local tag="${2}_seed${3}_T${4}"
  [ "$location" = centre ] || tag="${location}_${tag}"  # the centre's parents came first and kept short names
  local file="$PARENTS/$tag.yaml"
  if [ "$location" = centre ]; then model=tiny; window="--axis matrix_lr=1e-3:1e3:32 --axis unembedding_lr=1e-2:1e1:32"
  else model=tiny-mid; window="--axis matrix_lr=1e-3:1e3:16 --axis unembedding_lr=1e-3:3e3:16"; fi
  # shellcheck disable=SC2086
  [ -f "$file" ] || "$FL" sweep new $window \
    --set model_id=$model --set dataset_id=docqa --set max_seq_len=256 --set device_batch_size=8 \
    --set num_iterations="$steps" --set trainable_window_steps=5 --set trainable_param_groups=matrix,unembedding \
    --set lr_schedule="$schedule" --set warmup_frac=0.06 --set seed="$seed" --set compile=compiled \
    --name "ladder_$tag" \
    --description "Budget ladder parent ($location): $model at ${steps} steps, ${schedule} schedule, seed ${seed}" \
    -o "$file" >/dev/null
  echo "$file"
}

for part in $PARTS; do
  IFS=_ read -r location schedule seed steps scale <<<"$part"
  seed=${seed#seed}; steps=${steps#T}
  span=0.511  # "..._fine": the same line ten times finer (steps of 1e-4 decades: spacings 1e-4 .. 0.0256)
  [ "${scale:-}" = fine ] && span=0.0511
  file=$(parent "$location" "$schedule" "$seed" "$steps")
  if [ "$location" = centre ]; then line="--through matrix_lr=5.94557070854 --along matrix_lr"
  else line="--through matrix_lr=0.02 --along unembedding_lr"; fi
  start=$(date +%s)
  # shellcheck disable=SC2086
  "$FL" transect "$file" $line --span "$span" --points 512 --workers "$WORKERS" --out "$OUT/$location/${part#*_}"
  "$FL" report --local "$OUT/$location/${part#*_}" --out "$OUT/$location/${part#*_}/report" >/dev/null
  printf '%s\t%s\t%s\n' "$part" "$(( $(date +%s) - start ))" "$(date -u +%FT%TZ)" >> "$OUT/wall_times.tsv"
done
