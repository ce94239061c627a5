#!/bin/sh
# Start TorchServe in the foreground with the production config. If the model store holds the champion archive
# (KHMER_OCR_TS_DEFAULT_MAR, khmer-ocr.mar by default, kept there by the deploy DAG), load it at start so a
# restarted container or a new replica serves the champion without waiting for a deployment.
# Extra arguments are passed to torchserve.
set -eu
store="${KHMER_OCR_MODEL_STORE:-/opt/khmer-ocr/model-store}"
config="${KHMER_OCR_TS_CONFIG:-/opt/khmer-ocr/torchserve/config.properties}"
mar="${KHMER_OCR_TS_DEFAULT_MAR:-khmer-ocr.mar}"
name="${KHMER_OCR_TS_MODEL_NAME:-khmer-ocr}"
# TorchServe writes key_file.json into its working directory (the image's WORKDIR, a shared volume in compose).
set -- torchserve --start --foreground --ncs --ts-config "$config" --model-store "$store" "$@"
if [ -f "$store/$mar" ]; then
  echo "torchserve-entrypoint: loading $name from $store/$mar"
  set -- "$@" --models "$name=$mar"
else
  echo "torchserve-entrypoint: no $store/$mar yet; models arrive through the management API"
fi
exec "$@"
