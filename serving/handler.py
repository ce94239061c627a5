"""TorchServe handler for khmer-ocr: a thin layer over khmer_ocr's Recognizer.

Per request: image(s) in (raw bytes, multipart parts, or JSON base64; see khmer_ocr.torchserve.requests),
JSON out (UTF-8, Khmer as is, `application/json; charset=utf-8`): {"text", "confidence", "model",
"model_version"} for one image, {"predictions": [{"text", "confidence"}, ...], "model", "model_version"} for
several. With the JSON field "page": true, a multipart form field page=true or the header X-Page: true each
image is a whole page: {"text", "lines": [{"box": [x0, y0, x1, y1], "text", "confidence"}, ...]} per page
(text: the lines joined by newlines in reading order), with "line_finder" (the line finder's version,
khmer_ocr.version.LINE_FINDER_VERSION) beside "model" and "model_version"; the line crops of every page in
the batch read together. A bad request gets a 4xx JSON error {"error", "status"}, one line in the log, and
never disturbs the other requests of its batch or the worker. Decoded pixels are budgeted from the image
headers before anything is decoded: per request (413) and per server-side batch (429 for the requests that
do not fit, to retry), so that no batch can run past TorchServe's response timeout (pages and lines alike).
"""

from __future__ import annotations

import json
import logging
import time

import torch
from ts.torch_handler.base_handler import BaseHandler

from khmer_ocr.inference import Recognizer
from khmer_ocr.names import MODEL_NAME
from khmer_ocr.pages import LINE_FINDER_VERSION, PageReader
from khmer_ocr.torchserve.requests import (
    MAX_BATCH_PIXELS,
    MAX_REQUEST_PIXELS,
    PAGE_HEADER,
    BadRequest,
    read_request,
)

log = logging.getLogger(__name__)
JSON_UTF8 = "application/json; charset=utf-8"


class KhmerOcrHandler(BaseHandler):
    def initialize(self, context) -> None:
        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler", {}) or {}
        torch.set_num_threads(int(settings.get("torch_threads", 1)))
        model = context.manifest.get("model", {})
        self.model_name = model.get("modelName", MODEL_NAME)
        self.model_version = str(model.get("modelVersion", ""))
        # The archive carries model.safetensors, model.yaml and charset.json: weights load without pickle.
        self.recognizer = Recognizer.load(context.system_properties["model_dir"])
        self.page_reader = PageReader(self.recognizer)
        self.batch_size = int(settings.get("predict_batch_size", 32))
        self.max_request_pixels = int(settings.get("max_request_pixels", MAX_REQUEST_PIXELS))
        self.max_batch_pixels = max(
            self.max_request_pixels, int(settings.get("max_batch_pixels", MAX_BATCH_PIXELS))
        )
        self.initialized = True
        log.info(
            "khmer-ocr %s version %s ready (line finder %s)",
            self.model_name,
            self.model_version,
            LINE_FINDER_VERSION,
        )

    def handle(self, data: list[dict], context) -> list[bytes]:
        start = time.perf_counter()
        responses: list[bytes | None] = [None] * len(data)
        pending, spent = {}, 0
        for idx, parts in enumerate(data):
            headers = context.get_all_request_header(idx) or {}
            request_type = next((v for k, v in headers.items() if str(k).lower() == "content-type"), "")
            page_header = next((v for k, v in headers.items() if str(k).lower() == PAGE_HEADER), None)
            part_types = {
                name: (headers.get(name) or {}).get("content-type", "")
                if isinstance(headers.get(name), dict)
                else ""
                for name in parts or {}
            }
            try:
                req = read_request(
                    parts or {}, part_types, request_type, self.max_request_pixels, page_header
                )
            except BadRequest as exc:
                responses[idx] = self._error(context, idx, exc.status, str(exc))
                continue
            if spent + req.pixels > self.max_batch_pixels:
                message = (
                    f"busy: this server-side batch already decodes {spent} pixels and yours has "
                    f"{req.pixels}; the budget is {self.max_batch_pixels} decoded pixels per batch: retry"
                )
                responses[idx] = self._error(context, idx, 429, message)
                continue
            spent += req.pixels
            pending[idx] = req
        parsed = {}
        for idx, req in pending.items():
            try:
                parsed[idx] = req.decode()
            except BadRequest as exc:
                responses[idx] = self._error(context, idx, exc.status, str(exc))
        images = [im for req in parsed.values() if not req.page for im in req.images]
        pages = [im for req in parsed.values() if req.page for im in req.images]
        try:
            preds = self.recognizer.predict(images, batch_size=self.batch_size) if images else []
            read = self.page_reader.read(pages, batch_size=self.batch_size) if pages else []
        except Exception as exc:  # a bug, not the client's fault: answer 500 and keep the worker
            log.exception("recognition failed")
            for idx in parsed:
                responses[idx] = self._error(context, idx, 500, f"recognition failed: {exc}")
            parsed = {}
        at = at_page = 0
        for idx, req in parsed.items():
            if req.page:
                rows = [p.to_dict() for p in read[at_page : at_page + len(req.images)]]
                at_page += len(req.images)
            else:
                mine = preds[at : at + len(req.images)]
                at += len(req.images)
                rows = [{"text": p.text, "confidence": round(p.confidence, 4)} for p in mine]
            body = dict(rows[0]) if req.single else {"predictions": rows}
            body.update(model=self.model_name, model_version=self.model_version)
            if req.page:  # the page reader it serves with: this model and the package's line finder
                body["line_finder"] = LINE_FINDER_VERSION
            responses[idx] = self._json(context, idx, body)
        context.metrics.add_time(
            "KhmerOcrHandlerTime", round((time.perf_counter() - start) * 1000, 2), None, "ms"
        )
        return responses

    @staticmethod
    def _json(context, idx: int, body: dict) -> bytes:
        context.set_response_content_type(idx, JSON_UTF8)
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def _error(self, context, idx: int, status: int, message: str) -> bytes:
        if status < 500:  # the client's mistake: one line, no traceback
            log.warning("request %d refused (%d): %s", idx, status, message[:300])
        context.set_response_status(code=status, phrase=message[:200], idx=idx)
        return self._json(context, idx, {"error": message, "status": status})
