#!/usr/bin/env python3
"""TorchServe container healthcheck: GET /ping on the inference API must answer "Healthy".

With token authorization on, the request carries the inference key from key_file.json (TorchServe writes it
into its working directory). The management and inference keys expire after `token_expiration_min`; when one
has less than RENEW_BEFORE left, this check renews it with the API key (GET /token?type=...), so the keys the
Airflow workers read from the shared volume stay valid. Without a key file (token authorization off: the
`scale` profile's replicas behind nginx) the request goes without a key. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

KEY_FILE = Path(os.environ.get("KHMER_OCR_TS_KEY_FILE", "/opt/khmer-ocr/torchserve-keys/key_file.json"))
INFERENCE = os.environ.get("KHMER_OCR_TS_INFERENCE_URL", "http://127.0.0.1:8080")
MANAGEMENT = os.environ.get("KHMER_OCR_TS_MANAGEMENT_URL", "http://127.0.0.1:8081")
RENEW_BEFORE = timedelta(minutes=int(os.environ.get("KHMER_OCR_TS_RENEW_MINUTES", "60")))


def _get(url: str, key: str | None) -> bytes:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        return response.read()


def _expires(entry: dict) -> datetime:
    # "2026-11-26T18:23:47.606482528Z": nanoseconds, so parse the seconds part only.
    return datetime.strptime(entry["expiration time"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


def main() -> int:
    key = None
    if KEY_FILE.exists():
        keys = json.loads(KEY_FILE.read_text())
        for kind in ("management", "inference"):
            if _expires(keys[kind]) - datetime.now(UTC) < RENEW_BEFORE:
                _get(f"{MANAGEMENT}/token?type={kind}", keys["API"]["key"])  # rewrites KEY_FILE
                print(f"renewed the {kind} key")
        key = json.loads(KEY_FILE.read_text())["inference"]["key"]
    status = json.loads(_get(f"{INFERENCE}/ping", key)).get("status")
    print(status)
    return 0 if status == "Healthy" else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # any failure is "unhealthy", with the reason in `docker inspect`
        print(f"unhealthy: {exc!r}")
        sys.exit(1)
