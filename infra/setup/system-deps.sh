#!/usr/bin/env bash
# Install the Debian packages khmer-ocr needs, only when something is missing.
# Java 17 runs TorchServe. Khmer fonts: Khmer OS family (fonts-khmeros), SIL Mondulkiri/Busra, Noto Sans/Serif Khmer (fonts-noto-core).
set -euo pipefail
packages=(fonts-khmeros fonts-sil-mondulkiri fonts-noto-core fontconfig openjdk-17-jre-headless)
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
