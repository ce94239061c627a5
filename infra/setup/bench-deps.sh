#!/usr/bin/env bash
# Install the Debian packages the benchmarks need (beyond infra/setup/system-deps.sh), only when missing.
# Tesseract 5 with its Khmer model (tesseract-ocr-khm: tessdata_fast khm.traineddata) for bench/peers.py.
set -euo pipefail
packages=(tesseract-ocr tesseract-ocr-khm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
