#!/usr/bin/env bash
# Install the Debian packages khmer-ocr needs, only when something is missing.
# Java 17 runs TorchServe. Khmer fonts: Khmer OS family (fonts-khmeros), SIL Mondulkiri/Busra, Noto Sans/Serif Khmer (fonts-noto-core).
# PostgreSQL and Redis: the production topology as local processes (`make run-distributed`, tests/test_distributed.py);
# khmer-ocr runs private instances of its own (initdb in its state folder), never the system's services.
set -euo pipefail
packages=(fonts-khmeros fonts-sil-mondulkiri fonts-noto-core fontconfig openjdk-17-jre-headless postgresql redis-server)
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
# policy-rc.d exit 101: Debian's maintainer scripts do not start the system's PostgreSQL or Redis services.
policy=/usr/sbin/policy-rc.d
if [ -e "$policy" ]; then
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy"
  trap '$sudo rm -f "$policy"' EXIT
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
