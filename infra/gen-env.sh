#!/usr/bin/env bash
# Write .env for docker compose from .env.example, replacing every `change-me` value by a fresh random secret
# (hex for passwords and tokens, a Fernet key for AIRFLOW_FERNET_KEY). Refuses to overwrite an existing file.
#   infra/gen-env.sh              # writes ./.env (next to docker-compose.yml)
#   infra/gen-env.sh path/to/.env
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/.env}"
if [ -e "$out" ]; then
  echo "$out exists: not overwritten (delete it first to generate new secrets)" >&2
  exit 1
fi
umask 077
while IFS= read -r line || [ -n "$line" ]; do
  if [[ "$line" =~ ^([A-Z0-9_]+)=change-me$ ]]; then
    name="${BASH_REMATCH[1]}"
    if [ "$name" = AIRFLOW_FERNET_KEY ]; then
      value="$(openssl rand -base64 32 | tr '+/' '-_')"  # 32 bytes, url-safe base64: a Fernet key
    else
      value="$(openssl rand -hex 24)"
    fi
    printf '%s=%s\n' "$name" "$value"
  else
    printf '%s\n' "$line"
  fi
done < "$root/.env.example" > "$out"
echo "wrote $out (mode 600); the Airflow admin password is AIRFLOW_ADMIN_PASSWORD in it"
