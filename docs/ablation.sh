#!/usr/bin/env bash
# The recognizer ablation of docs/recognizer.md: three fast models trained alike on streamed lines, then
# evaluated per difficulty level on the same fresh test lines. About 25 minutes per model on one CPU core.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
OUT=${OUT:-runs/ablation}
BIN=${BIN:-.venv/bin}
mkdir -p "$OUT"
[ -f "$OUT/eval/manifest.jsonl" ] || "$BIN/khmer-ocr" generate --profile reference --set num_samples=6000 \
  --set "splits=[val, test]" --seed 777 --out "$OUT/eval"
for spec in "h32s4:base:32" "h48s3:base_stride3:48" "h48s4:base:48"; do
  IFS=: read -r name size height <<< "$spec"
  "$BIN/khmer-ocr" train production_fast --stream --data "$OUT/eval" --out "$OUT/$name" --workers 1 \
    --set model.size="$size" --set model.input_height="$height" --set optim.batch_size=32 \
    --set optim.lr=0.002 --set optim.warmup_fraction=0.05 --set data.curriculum=false \
    --set data.max_val_lines=300 --set data.stream.steps_per_epoch=500 --set optim.epochs=3
  "$BIN/khmer-ocr" evaluate --model "$OUT/$name/model" --data "$OUT/eval" --gates demo \
    --report "$OUT/$name-evaluation.json" || true  # the demo gates fail on barely trained models
done
