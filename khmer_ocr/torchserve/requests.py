"""Turning one REST request into text-line images, with a clear 4xx error for anything else.

Accepted (the TorchServe handler gets each request as {part name: value} with a content type per part):
  raw image bytes          Content-Type application/octet-stream or image/*           -> one image
  multipart/form-data      one part per image (give each file its own field name)    -> one image per part
  JSON                     {"image": "<base64>"} or {"images": ["<base64>", ...]}     -> one or several
Each image is a text line, or a whole page whose lines are found and read (khmer_ocr.pages) when the
request asks: the JSON field "page": true, a multipart form field page=true, or the header X-Page: true
(TorchServe does not hand query parameters to the handler, so ?page=true cannot be the way).
Limits keep a worker safe: body size, pixels per image (decompression bombs are refused from the header,
before decoding), side lengths, and decoded pixels per request and per server-side batch, all checked from
the image headers before any pixel is decoded (64 small, highly compressible images of 16 Mpixel each are
1.5 MB of JSON but a gigapixel to decode).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass

import numpy as np

MAX_IMAGES = 64  # per request
MAX_BYTES = 10 * 1024 * 1024  # per image
MAX_PIXELS = 16_000_000  # per image: far above any text line, far below a bomb
# Decoded pixels per request and per server-side batch (serving/model-config.yaml can lower them): 64 long
# lines of 100 x 2,000 px are 12.8 Mpixel; decoding and reading 64 Mpixel takes about a second on one core.
MAX_REQUEST_PIXELS = 32_000_000
MAX_BATCH_PIXELS = 64_000_000
MAX_SIDE = 16_384
MIN_SIDE = 4
IMAGE_TYPES = ("image/", "application/octet-stream")
PAGE = "page"  # JSON field ("page": true) or multipart form field (page=true): the images are whole pages
PAGE_HEADER = "x-page"  # or the request header X-Page: true
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


class BadRequest(ValueError):
    """The request cannot be read; status is the HTTP code to answer with (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ParsedRequest:
    images: list[np.ndarray]  # grayscale uint8
    single: bool  # one image sent the single way: answer with one object, not a list
    page: bool = False  # the images are whole pages: find their lines and read them


def _open(data: bytes, what: str):
    """The PIL image of encoded bytes with only its header read, checked against the per-image limits."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadRequest(f"{what} is empty")
    if len(data) > MAX_BYTES:
        raise BadRequest(f"{what} is {len(data)} bytes; the limit is {MAX_BYTES}", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadRequest(f"{what} refused as a decompression bomb: {exc}", 413) from exc
    except UnidentifiedImageError as exc:
        raise BadRequest(f"{what} is not an image (PNG, JPEG, WebP, TIFF, BMP, ...)") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt header
        raise BadRequest(f"{what} is not a readable image: {exc}") from exc
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise BadRequest(
            f"{what} is {width}x{height} = {width * height} pixels; the limit is {MAX_PIXELS} "
            "(a text-line image is far smaller)",
            413,
        )
    if max(width, height) > MAX_SIDE or min(width, height) < MIN_SIDE:
        raise BadRequest(f"{what} is {width}x{height}: each side must be {MIN_SIDE} to {MAX_SIDE} pixels")
    return im


def _decode(im, what: str) -> np.ndarray:
    """Decode an image opened by _open into a grayscale uint8 array."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()
            return np.asarray(im.convert("L"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadRequest(f"{what} refused as a decompression bomb: {exc}", 413) from exc
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
        raise BadRequest(f"{what} is not a readable image: {exc}") from exc


def decode_image(data: bytes, what: str = "image") -> np.ndarray:
    """A grayscale uint8 array from encoded image bytes (PNG, JPEG, WebP, TIFF, BMP, ...), checked
    against the limits from the header before any pixel is decoded."""
    return _decode(_open(data, what), what)


@dataclass
class PendingRequest:
    """A request whose images passed every check that their headers allow; nothing decoded yet."""

    images: list  # PIL images, header read
    names: list[str]
    single: bool
    page: bool = False

    @property
    def pixels(self) -> int:
        """Decoded pixels the request will cost."""
        return sum(im.size[0] * im.size[1] for im in self.images)

    def decode(self) -> ParsedRequest:
        return ParsedRequest(
            [_decode(im, what) for im, what in zip(self.images, self.names, strict=True)],
            self.single,
            self.page,
        )


def _pending(items: list[tuple[bytes, str]], single: bool, max_pixels: int) -> PendingRequest:
    pending = PendingRequest([_open(data, what) for data, what in items], [w for _, w in items], single)
    if pending.pixels > max_pixels:
        raise BadRequest(
            f"{len(items)} image(s) of {pending.pixels} pixels in all; the limit is {max_pixels} decoded "
            "pixels per request: send fewer or smaller images per request",
            413,
        )
    return pending


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{what} must be a non-empty base64 string")
    if value.startswith("data:") and "," in value:  # a data URL
        value = value.split(",", 1)[1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"{what} is not valid base64: {exc}") from exc


def _from_json(value: object, max_pixels: int) -> PendingRequest:
    if isinstance(value, bytes | bytearray):  # the raw body (serving/config.properties: decode_input_request)
        try:
            value = json.loads(bytes(value).decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise BadRequest(
                f"the body is not valid JSON: not UTF-8 ({exc.reason} at byte {exc.start})"
            ) from exc
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from exc
    page = False
    if isinstance(value, dict) and PAGE in value:
        if not isinstance(value[PAGE], bool):
            raise BadRequest(f'"{PAGE}" must be true (the images are whole pages) or false (text lines)')
        page = value[PAGE]
    if isinstance(value, dict) and "image" in value:
        pending = _pending([(_b64(value["image"], '"image"'), '"image"')], True, max_pixels)
        pending.page = page
        return pending
    if isinstance(value, dict) and "images" in value:
        items = value["images"]
        if not isinstance(items, list) or not items:
            raise BadRequest('"images" must be a non-empty list of base64 strings')
        if len(items) > MAX_IMAGES:
            raise BadRequest(f"{len(items)} images in one request; the limit is {MAX_IMAGES}", 413)
        named = [(_b64(v, f'"images"[{i}]'), f'"images"[{i}]') for i, v in enumerate(items)]
        pending = _pending(named, False, max_pixels)
        pending.page = page
        return pending
    raise BadRequest('JSON must be {"image": "<base64>"} or {"images": ["<base64>", ...]}')


def read_request(
    parts: dict[str, object],
    content_types: dict[str, str],
    request_type: str,
    max_pixels: int = MAX_REQUEST_PIXELS,
    page_header: str | None = None,
) -> PendingRequest:
    """The images of one request, checked from their headers (limits per image and max_pixels decoded
    pixels in all) but not decoded: PendingRequest.pixels says what decoding will cost.

    parts: TorchServe's {part name: value} (raw body: one part named "body" or "data"); content_types: the
    content type of each part; request_type: the request's own Content-Type header; page_header: the
    value of the X-Page header, if the request has one.
    """
    request_type = (request_type or "").split(";")[0].strip().lower()
    page = False
    if page_header is not None:
        if (flag := _flag(page_header)) is None:
            raise BadRequest(
                f"X-Page: {page_header[:20]!r} must be true (the images are whole pages) or false"
            )
        page = flag
    if PAGE in (parts or {}) and (flag := _flag(parts[PAGE])) is not None:  # a form field page=true
        page = page or flag
        parts = {k: v for k, v in parts.items() if k != PAGE}
    pending = _read(parts, content_types, request_type, max_pixels)
    pending.page = pending.page or page
    return pending


def _flag(value: object) -> bool | None:
    """The value of a page flag (form field or header); None when the value is no flag (an image part
    that happens to be named page)."""
    if isinstance(value, bytes | bytearray):
        if len(value) > 8:
            return None
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def _read(
    parts: dict[str, object], content_types: dict[str, str], request_type: str, max_pixels: int
) -> PendingRequest:
    if not parts or all(v in (None, b"", "") for v in parts.values()):
        raise BadRequest("empty request: send an image (raw bytes, multipart/form-data, or JSON base64)")
    if request_type == "application/json":
        if len(parts) != 1:
            raise BadRequest("a JSON request has one body")
        return _from_json(next(iter(parts.values())), max_pixels)
    multipart = request_type == "multipart/form-data"
    if not multipart and not request_type.startswith(IMAGE_TYPES):
        raise BadRequest(
            f"unsupported Content-Type {request_type or '(none)'!r}: use application/octet-stream, image/*, "
            "multipart/form-data or application/json",
            415,
        )
    if len(parts) > MAX_IMAGES:
        raise BadRequest(f"{len(parts)} images in one request; the limit is {MAX_IMAGES}", 413)
    items = []
    for name, value in parts.items():
        part_type = (content_types.get(name) or "").split(";")[0].strip().lower()
        if (multipart and part_type.startswith("text/")) or isinstance(value, str):
            raise BadRequest(f"part {name!r} is text ({part_type or 'no type'}), not an image file")
        if not isinstance(value, bytes | bytearray):
            raise BadRequest(f"part {name!r} is not image bytes")
        items.append((bytes(value), f"part {name!r}" if multipart else "the body"))
    return _pending(items, len(items) == 1, max_pixels)


def parse_request(
    parts: dict[str, object],
    content_types: dict[str, str],
    request_type: str,
    max_pixels: int = MAX_REQUEST_PIXELS,
) -> ParsedRequest:
    """The decoded images of one request (read_request, then decoding)."""
    return read_request(parts, content_types, request_type, max_pixels).decode()
