#!/usr/bin/env bash
# Install the Debian packages khmer-ocr needs, only when something is missing.
# Java 17 runs TorchServe. Khmer fonts: Khmer OS family (fonts-khmeros), SIL Mondulkiri/Busra, Noto Sans/Serif Khmer (fonts-noto-core).
# PostgreSQL and Redis: the production topology as local processes (`make run-distributed`, tests/test_distributed.py);
# khmer-ocr runs private instances of its own (initdb in its state folder), never the system's services.
set -euo pipefail
exec bash "$(dirname "$0")/apt-install.sh" fonts-khmeros fonts-sil-mondulkiri fonts-noto-core fontconfig \
  openjdk-17-jre-headless postgresql redis-server
