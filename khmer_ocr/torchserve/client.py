"""A small client for TorchServe's inference and management REST APIs (standard library only)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

from khmer_ocr.errors import ServingError
from khmer_ocr.http import Response, request


class TorchServeClient:
    """Inference (`/ping`, `/predictions`) and management (`/models`) calls; token when auth is on."""

    def __init__(
        self,
        management_url: str = "http://127.0.0.1:8081",
        inference_url: str = "http://127.0.0.1:8080",
        token: str | None = None,
        inference_token: str | None = None,
        timeout: float = 60.0,
        key_file: str | None = None,
    ) -> None:
        """token / inference_token: fixed keys; key_file: TorchServe's key_file.json (token authorization
        on), read on every call because TorchServe rotates its keys."""
        self.management_url = management_url.rstrip("/")
        self.inference_url = inference_url.rstrip("/")
        self._token, self._inference_token, self.timeout = token, inference_token, timeout
        self.key_file = key_file

    def _key(self, api: str) -> str | None:
        if not self.key_file:
            return None
        try:
            return json.loads(Path(self.key_file).read_text(encoding="utf-8"))[api]["key"]
        except (OSError, ValueError, KeyError) as exc:
            raise ServingError(f"cannot read the {api} key from {self.key_file}: {exc}") from exc

    @property
    def token(self) -> str | None:
        return self._token or self._key("management")

    @property
    def inference_token(self) -> str | None:
        return self._inference_token or self._key("inference")

    # ------------------------------------------------------------------------------------------- plumbing
    def _call(
        self,
        method: str,
        url: str,
        data: bytes | None = None,
        content_type: str | None = None,
        token: str | None = None,
    ) -> Response:
        headers = {"Content-Type": content_type} if content_type else {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            return request(method, url, data, headers, self.timeout)
        except OSError as exc:
            raise ServingError(f"TorchServe at {url} cannot be reached: {exc}") from exc

    def _manage(self, method: str, path: str, **params: Any) -> Response:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        url = f"{self.management_url}{path}" + (f"?{query}" if query else "")
        return self._call(method, url, token=self.token)

    @staticmethod
    def _ok(r: Response, what: str) -> Any:
        if r.status >= 300:
            raise ServingError(f"{what}: HTTP {r.status}: {r.body}")
        return r.body

    # ------------------------------------------------------------------------------------------ inference
    def healthy(self) -> bool:
        try:
            r = self._call("GET", f"{self.inference_url}/ping", token=self.inference_token)
        except ServingError:
            return False
        return r.status == 200 and isinstance(r.body, dict) and r.body.get("status") == "Healthy"

    def predict(
        self,
        model_name: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        version: str | None = None,
    ) -> Response:
        path = f"/predictions/{model_name}" + (f"/{version}" if version else "")
        return self._call("POST", f"{self.inference_url}{path}", data, content_type, self.inference_token)

    # ----------------------------------------------------------------------------------------- management
    def versions(self, model_name: str) -> list[dict]:
        """[{"modelVersion", "default"?, "workers": [...], ...}] for every registered version; [] if none."""
        r = self._manage("GET", f"/models/{model_name}/all")
        if r.status == 404:
            return []
        return self._ok(r, f"describe {model_name}")

    def default_version(self, model_name: str) -> str | None:
        r = self._manage("GET", f"/models/{model_name}")
        if r.status == 404:
            return None
        body = self._ok(r, f"describe {model_name}")
        return str(body[0]["modelVersion"]) if body else None

    def register(
        self,
        archive: str,
        model_name: str,
        initial_workers: int = 1,
        timeout_s: int = 120,
        batch_size: int | None = None,
        max_batch_delay_ms: int | None = None,
    ) -> None:
        """Register an archive from the model store (its file name) and wait until its workers run;
        batch settings default to the archive's model-config.yaml."""
        r = self._manage(
            "POST", "/models", url=archive, model_name=model_name, initial_workers=initial_workers,
            synchronous="true", response_timeout=timeout_s, batch_size=batch_size,
            max_batch_delay=max_batch_delay_ms,
        )  # fmt: skip
        self._ok(r, f"register {archive}")

    def set_default(self, model_name: str, version: str) -> None:
        self._ok(self._manage("PUT", f"/models/{model_name}/{version}/set-default"), "set default version")

    def unregister(self, model_name: str, version: str | None = None) -> None:
        path = f"/models/{model_name}" + (f"/{version}" if version else "")
        self._ok(self._manage("DELETE", path), f"unregister {model_name} {version or ''}".strip())
