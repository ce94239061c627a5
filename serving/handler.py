"""TorchServe handler for khmer-ocr: a thin layer over khmer_ocr's Recognizer.

Per request: image(s) in (raw bytes, multipart parts, or JSON base64; see khmer_ocr.torchserve.requests),
JSON out: {"text", "confidence", "model", "model_version"} for one image, {"predictions": [{"text",
"confidence"}, ...], "model", "model_version"} for several. A bad request gets a 4xx JSON error
{"error", "status"} and never disturbs the other requests of its batch or the worker.
"""

from __future__ import annotations

import logging
import time

import torch
from ts.torch_handler.base_handler import BaseHandler

from khmer_ocr.inference import Recognizer
from khmer_ocr.torchserve.requests import BadRequest, parse_request

log = logging.getLogger(__name__)


class KhmerOcrHandler(BaseHandler):
    def initialize(self, context) -> None:
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler", {}) or {}
        torch.set_num_threads(int(settings.get("torch_threads", 1)))
        model = context.manifest.get("model", {})
        self.model_name = model.get("modelName", "khmer-ocr")
        self.model_version = str(model.get("modelVersion", ""))
        # The archive carries model.safetensors, model.yaml and charset.json: weights load without pickle.
        self.recognizer = Recognizer.load(context.system_properties["model_dir"])
        self.batch_size = int(settings.get("predict_batch_size", 32))
        self.initialized = True
        log.info("khmer-ocr %s version %s ready", self.model_name, self.model_version)

    def handle(self, data: list[dict], context) -> list[dict]:
        start = time.perf_counter()
        responses: list[dict | None] = [None] * len(data)
        parsed = {}
        for idx, parts in enumerate(data):
            headers = context.get_all_request_header(idx) or {}
            request_type = next((v for k, v in headers.items() if str(k).lower() == "content-type"), "")
            part_types = {
                name: (headers.get(name) or {}).get("content-type", "")
                if isinstance(headers.get(name), dict)
                else ""
                for name in parts
            }
            try:
                parsed[idx] = parse_request(parts or {}, part_types, request_type)
            except BadRequest as exc:
                responses[idx] = self._error(context, idx, exc.status, str(exc))
        images = [im for req in parsed.values() for im in req.images]
        try:
            preds = self.recognizer.predict(images, batch_size=self.batch_size) if images else []
        except Exception as exc:  # a bug, not the client's fault: answer 500 and keep the worker
            log.exception("recognition failed")
            for idx in parsed:
                responses[idx] = self._error(context, idx, 500, f"recognition failed: {exc}")
            parsed = {}
        at = 0
        for idx, req in parsed.items():
            mine = preds[at : at + len(req.images)]
            at += len(req.images)
            rows = [{"text": p.text, "confidence": round(p.confidence, 4)} for p in mine]
            body = dict(rows[0]) if req.single else {"predictions": rows}
            responses[idx] = {**body, "model": self.model_name, "model_version": self.model_version}
        context.metrics.add_time(
            "KhmerOcrHandlerTime", round((time.perf_counter() - start) * 1000, 2), None, "ms"
        )
        return responses

    @staticmethod
    def _error(context, idx: int, status: int, message: str) -> dict:
        context.set_response_status(code=status, phrase=message[:200], idx=idx)
        return {"error": message, "status": status}
