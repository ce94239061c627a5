"""Tesseract 5 through libtesseract's C API (ctypes), for the benchmarks that compare it with khmer-ocr.

The language model is loaded once, as the project's recognizer is; every call hands over a uint8 grayscale
array. `text` reads a line or a page; `page` also returns the text lines' boxes; `layout` only finds lines.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

from khmer_ocr.script import normalize

INSTALL_HINT = "install it with `bash infra/setup/bench-deps.sh` (Debian: tesseract-ocr tesseract-ocr-khm)"
DEFAULT_DPI = 70  # what the `tesseract` command assumes for an image without a resolution
PSM_SINGLE_LINE, PSM_BLOCK, PSM_AUTO = 7, 6, 3
_RIL_TEXTLINE = 2


class TesseractAPI:
    def __init__(self, lang: str = "khm", psm: int = PSM_SINGLE_LINE) -> None:
        path = ctypes.util.find_library("tesseract") or "libtesseract.so.5"
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            raise SystemExit(f"libtesseract not found ({exc}): {INSTALL_HINT}") from exc
        vp, cp, i = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        lib.TessVersion.restype = cp
        lib.TessBaseAPICreate.restype = vp
        lib.TessBaseAPIInit3.argtypes = [vp, cp, cp]
        lib.TessBaseAPISetPageSegMode.argtypes = [vp, i]
        lib.TessBaseAPISetImage.argtypes = [vp, vp, i, i, i, i]
        lib.TessBaseAPISetSourceResolution.argtypes = [vp, i]
        lib.TessBaseAPIRecognize.argtypes = [vp, vp]
        lib.TessBaseAPIGetUTF8Text.argtypes = [vp]
        lib.TessBaseAPIGetUTF8Text.restype = vp
        lib.TessBaseAPIGetTsvText.argtypes = [vp, i]
        lib.TessBaseAPIGetTsvText.restype = vp
        lib.TessBaseAPIAnalyseLayout.argtypes = [vp]
        lib.TessBaseAPIAnalyseLayout.restype = vp
        lib.TessPageIteratorBoundingBox.argtypes = [vp, i] + [ctypes.POINTER(ctypes.c_int)] * 4
        lib.TessPageIteratorNext.argtypes = [vp, i]
        lib.TessPageIteratorDelete.argtypes = [vp]
        lib.TessDeleteText.argtypes = [vp]
        lib.TessBaseAPIEnd.argtypes = [vp]
        lib.TessBaseAPIDelete.argtypes = [vp]
        self.lib, self.version = lib, lib.TessVersion().decode()
        self.handle = lib.TessBaseAPICreate()
        if lib.TessBaseAPIInit3(self.handle, None, lang.encode()) != 0:
            lib.TessBaseAPIDelete(self.handle)
            raise SystemExit(f"Tesseract could not load language {lang!r}: {INSTALL_HINT}")
        lib.TessBaseAPISetPageSegMode(self.handle, psm)

    def _set(self, image: np.ndarray) -> None:
        img = np.ascontiguousarray(image, dtype=np.uint8)
        if img.ndim != 2:
            raise ValueError(f"expected a grayscale image, got shape {img.shape}")
        self._image = img  # Tesseract reads the buffer until the next image: keep it alive
        height, width = img.shape
        self.lib.TessBaseAPISetImage(self.handle, img.ctypes.data, width, height, 1, img.strides[0])
        self.lib.TessBaseAPISetSourceResolution(self.handle, DEFAULT_DPI)

    def _string(self, ptr: int | None) -> str:
        if not ptr:
            return ""
        try:
            return ctypes.string_at(ptr).decode("utf-8", errors="replace")
        finally:
            self.lib.TessDeleteText(ptr)

    def text(self, image: np.ndarray) -> str:
        """Tesseract's text of the image, as it gives it."""
        self._set(image)
        return self._string(self.lib.TessBaseAPIGetUTF8Text(self.handle))

    def page(self, image: np.ndarray) -> tuple[str, list[tuple[int, int, int, int]]]:
        """The page's text (lines normalized, empty ones dropped) and its text lines' boxes."""
        self._set(image)
        self.lib.TessBaseAPIRecognize(self.handle, None)
        text = self._string(self.lib.TessBaseAPIGetUTF8Text(self.handle))
        tsv = self._string(self.lib.TessBaseAPIGetTsvText(self.handle, 0))
        boxes = []
        for row in tsv.splitlines():
            cols = row.split("\t")
            if len(cols) >= 10 and cols[0] == "4":  # level 4: a text line
                x, y, bw, bh = (int(v) for v in cols[6:10])
                boxes.append((x, y, x + bw, y + bh))
        lines = [normalize(t).strip() for t in text.splitlines()]
        return "\n".join(t for t in lines if t), boxes

    def layout(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The text lines' boxes from layout analysis alone (no recognition)."""
        self._set(image)
        it = self.lib.TessBaseAPIAnalyseLayout(self.handle)
        boxes: list[tuple[int, int, int, int]] = []
        if not it:
            return boxes
        c = [ctypes.c_int() for _ in range(4)]
        while True:
            if self.lib.TessPageIteratorBoundingBox(it, _RIL_TEXTLINE, *(ctypes.byref(v) for v in c)):
                boxes.append((c[0].value, c[1].value, c[2].value, c[3].value))
            if not self.lib.TessPageIteratorNext(it, _RIL_TEXTLINE):
                break
        self.lib.TessPageIteratorDelete(it)
        return boxes

    def close(self) -> None:
        if self.handle:
            self.lib.TessBaseAPIEnd(self.handle)
            self.lib.TessBaseAPIDelete(self.handle)
            self.handle = None
