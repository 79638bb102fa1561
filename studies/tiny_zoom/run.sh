#!/usr/bin/env bash
# The measured answer of docs/results.md: a zoom sequence on the tiny model and the robustness checks, resumable.
#
#   bash studies/tiny_zoom/run.sh            # unpacks the committed records (once), then runs what is missing
#   bash studies/tiny_zoom/run.sh pack       # packs the records back into studies/tiny_zoom/records.tar.gz
#
# The centre is a point of the loss-ratio = 1 boundary of sweeps/smoke_band32.yaml, found by bisection along
# unembedding_lr at matrix_lr = 5.9456 (16 runs, bracket 1.2e-5 decades):
#   fractal-llm boundary sweeps/smoke_band32.yaml --along unembedding_lr --bracket 0.05,0.3 \
#       --at matrix_lr=5.945570708544395 --bisect-steps 16
# Records live in runs/tiny_zoom/ (git-ignored); records.tar.gz carries them between machines and sessions.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=studies/tiny_zoom
out=runs/tiny_zoom
if [ "${1:-}" = pack ]; then
  tar -czf "$here/records.tar.gz" -C "$out" --exclude='*.claim' --exclude='.tmp-*' .
  exit 0
fi
mkdir -p "$out"
[ -f "$here/records.tar.gz" ] && [ ! -e "$out/.unpacked" ] && tar -xzf "$here/records.tar.gz" -C "$out" && touch "$out/.unpacked"
export OMP_NUM_THREADS=1 WANDB_MODE=disabled
C=5.94557070854,0.101442139338
fl=.venv/bin/fractal-llm
$fl zoom sweeps/smoke_band32.yaml --centre $C --frames 0:5 --res 64 --out $out/seq64
$fl zoom sweeps/smoke_band32.yaml --centre $C --frames 1:1 --res 128 --out $out/seq128
$fl zoom sweeps/smoke_band32.yaml --centre $C --frames 4:4 --res 128 --out $out/seq128
.venv/bin/python scripts/study_robustness.py $out/seq64/frame_02.yaml --out $out/robust24 --res 24 --adaptive
# frame 4 with every point run, starting from the adaptive frame's records: what does the adaptive fill miss?
if [ ! -e $out/full64/frame_04/sweep.yaml ]; then
  mkdir -p $out/full64/frame_04 && cp $out/seq64/frame_04/matrix_lr=*.json $out/full64/frame_04/
fi
$fl local $out/seq64/frame_04.yaml --out $out/full64/frame_04
$fl report --local $out/full64/frame_04 --compare-local $out/seq64/frame_04 --labels full adaptive \
    --out reports/out/tiny_zoom/frame_04_full
$fl report --sequence $out/seq64 --out reports/out/tiny_zoom/seq64
$fl report --sequence $out/seq128 --out reports/out/tiny_zoom/seq128
