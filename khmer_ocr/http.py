"""One small HTTP call for the services khmer-ocr talks to over REST (TorchServe, Airflow, MLflow health),
standard library only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


@dataclass
class Response:
    status: int
    body: Any  # parsed JSON, else text


def request(
    method: str,
    url: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Response:
    """Send one request; HTTP error statuses come back as responses, an unreachable server raises OSError."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode("utf-8", errors="replace")
    try:
        return Response(status, json.loads(text))
    except ValueError:
        return Response(status, text)


def send_json(method: str, url: str, body: Any, headers: dict[str, str] | None = None) -> Response:
    """request() with a JSON body."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    return request(method, url, json.dumps(body).encode(), headers)
