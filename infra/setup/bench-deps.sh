#!/usr/bin/env bash
# Install the Debian packages the benchmarks need (beyond infra/setup/system-deps.sh), only when missing.
# Tesseract 5 with its Khmer model (tesseract-ocr-khm: tessdata_fast khm.traineddata) for bench/peers.py.
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" tesseract-ocr tesseract-ocr-khm
