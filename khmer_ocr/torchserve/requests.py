"""Turning one REST request into text-line images, with a clear 4xx error for anything else.

Accepted (the TorchServe handler gets each request as {part name: value} with a content type per part):
  raw image bytes          Content-Type application/octet-stream or image/*           -> one image
  multipart/form-data      one part per image (give each file its own field name)    -> one image per part
  JSON                     {"image": "<base64>"} or {"images": ["<base64>", ...]}     -> one or several
Limits keep a worker safe: body size, pixel count (decompression bombs are refused from the header,
before decoding), side lengths.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

import numpy as np

MAX_IMAGES = 64  # per request
MAX_BYTES = 10 * 1024 * 1024  # per image
MAX_PIXELS = 16_000_000  # per image: far above any text line, far below a bomb
MAX_SIDE = 16_384
MIN_SIDE = 4
IMAGE_TYPES = ("image/", "application/octet-stream")


class BadRequest(ValueError):
    """The request cannot be read; status is the HTTP code to answer with (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ParsedRequest:
    images: list[np.ndarray]  # grayscale uint8
    single: bool  # one image sent the single way: answer with one object, not a list


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """A grayscale uint8 array from encoded image bytes (PNG, JPEG, WebP, TIFF, BMP, ...), checked
    against the limits from the header before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadRequest(f"{what} is empty")
    if len(data) > MAX_BYTES:
        raise BadRequest(f"{what} is {len(data)} bytes; the limit is {MAX_BYTES}", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise BadRequest(
                    f"{what} is {width}x{height} = {width * height} pixels; the limit is {MAX_PIXELS} "
                    "(a text-line image is far smaller)",
                    413,
                )
            if max(width, height) > MAX_SIDE or min(width, height) < MIN_SIDE:
                raise BadRequest(
                    f"{what} is {width}x{height}: each side must be {MIN_SIDE} to {MAX_SIDE} pixels"
                )
            im.load()
            return np.asarray(im.convert("L"))
    except BadRequest:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadRequest(f"{what} refused as a decompression bomb: {exc}", 413) from exc
    except UnidentifiedImageError as exc:
        raise BadRequest(f"{what} is not an image (PNG, JPEG, WebP, TIFF, BMP, ...)") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise BadRequest(f"{what} is not a readable image: {exc}") from exc


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a non-empty base64 string")
    if value.startswith("data:") and "," in value:  # a data URL
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{what} is not valid base64: {exc}") from exc


def _from_json(value: object) -> ParsedRequest:
    if isinstance(value, bytes | bytearray):  # TorchServe forwards JSON it could not parse as bytes
        raise BadRequest("the body is not valid JSON")
    if isinstance(value, dict) and "image" in value:
        return ParsedRequest([decode_image(_b64(value["image"], '"image"'), '"image"')], True)
    if isinstance(value, dict) and "images" in value:
        items = value["images"]
        if not isinstance(items, list) or not items:
            raise BadRequest('"images" must be a non-empty list of base64 strings')
        if len(items) > MAX_IMAGES:
            raise BadRequest(f"{len(items)} images in one request; the limit is {MAX_IMAGES}", 413)
        return ParsedRequest(
            [decode_image(_b64(v, f'"images"[{i}]'), f'"images"[{i}]') for i, v in enumerate(items)], False
        )
    raise BadRequest('JSON must be {"image": "<base64>"} or {"images": ["<base64>", ...]}')


def parse_request(
    parts: dict[str, object], content_types: dict[str, str], request_type: str
) -> ParsedRequest:
    """The images of one request.

    parts: TorchServe's {part name: value} (raw body: one part named "body" or "data"); content_types: the
    content type of each part; request_type: the request's own Content-Type header.
    """
    request_type = (request_type or "").split(";")[0].strip().lower()
    if not parts or all(v in (None, b"", "") for v in parts.values()):
        raise BadRequest("empty request: send an image (raw bytes, multipart/form-data, or JSON base64)")
    if request_type == "application/json":
        if len(parts) != 1:
            raise BadRequest("a JSON request has one body")
        return _from_json(next(iter(parts.values())))
    multipart = request_type == "multipart/form-data"
    if not multipart and not request_type.startswith(IMAGE_TYPES):
        raise BadRequest(
            f"unsupported Content-Type {request_type or '(none)'!r}: use application/octet-stream, image/*, "
            "multipart/form-data or application/json",
            415,
        )
    if len(parts) > MAX_IMAGES:
        raise BadRequest(f"{len(parts)} images in one request; the limit is {MAX_IMAGES}", 413)
    images = []
    for name, value in parts.items():
        part_type = (content_types.get(name) or "").split(";")[0].strip().lower()
        if (multipart and part_type.startswith("text/")) or isinstance(value, str):
            raise BadRequest(f"part {name!r} is text ({part_type or 'no type'}), not an image file")
        if not isinstance(value, bytes | bytearray):
            raise BadRequest(f"part {name!r} is not image bytes")
        images.append(decode_image(bytes(value), f"part {name!r}" if multipart else "the body"))
    return ParsedRequest(images, single=len(images) == 1)
