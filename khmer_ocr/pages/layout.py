"""Finding the text lines of a page image: classical, no learned weights, tens of ms per page.

1. Ink: the difference to the local background (a median on a reduced image, which keeps the sharp edges
   of UI panels; its window follows the text size, and a second, tighter one vetoes the rims of thin
   bars), thresholded in both directions, so dark text on paper and light text on a dark panel are found
   alike on one page, under uneven light; where the background itself steps (a panel's or the page's
   edge) nothing is ink.
2. Deskew: the angle (within +-MAX_SKEW degrees) that makes the row profiles of STRIPS vertical strips
   sharpest (strips, so that two columns whose lines do not line up cannot fake an angle).
3. Line bodies: the ink components of character height (consonants, digits, letters; not the small vowel
   signs and subscripts that would bridge two close lines) joined by a horizontal smear of about two
   character heights, plus the punctuation between them; a blob that still holds several lines is split
   by its components' centres, taken along the blob's own slope; far-apart words of one line (a large
   heading) are joined.
4. Marks: vowel signs above, subscripts below and other small components join the line whose body band
   is nearest, so Khmer stacks stay with their line.
5. Reading order: a recursive XY cut of the line boxes at the widest gap (side-by-side blocks left to
   right, then top to bottom).

Steps 1 and 2 are khmer_ocr.pages.ink's. Each line comes back with its box in the input image's pixels
and a deskewed grayscale crop in which the ink of every other line is painted over with background, ready
for the recognizer. Measured against Tesseract's layout analysis and PP-OCRv4's detector in bench/pages.py.
Its version, khmer_ocr.version.LINE_FINDER_VERSION, is recorded with every registered model: bump it when a
change here or in khmer_ocr.pages.ink moves the boxes found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from khmer_ocr.pages.ink import BACKGROUND_WINDOW, estimate_skew, ink_mask, rotate, text_scale
from khmer_ocr.preprocess import to_gray

GUTTER = 1.2  # a vertical gap this many text scales wide separates side-by-side blocks
MIN_INK_HEIGHT = 5  # px: a line's ink must be at least this tall
MAX_SIDE = 4096


@dataclass
class FoundLine:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in the input image
    crop: np.ndarray  # deskewed uint8 grayscale crop of the line, other lines' ink removed
    height: int  # ink height in the deskewed page (px of the input image)


@dataclass
class PageLayout:
    lines: list[FoundLine]
    angle: float  # degrees the page was turned by to deskew it
    scale: float  # the text's typical component height, px


def _within_bodies(
    smeared: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    cy: np.ndarray,
    reach: float,
) -> np.ndarray:
    """Components with smeared line bodies right beside them, within `reach` rows of their centre (a mark
    between two words of a line: a dash, an ellipsis's dots, a quotation mark)."""
    out = np.zeros(len(x), bool)
    width = smeared.shape[1]
    for dy in np.unique(np.round(np.linspace(-reach, reach, 5)).astype(np.int64)):
        row = np.clip(np.round(cy).astype(np.int64) + dy, 0, smeared.shape[0] - 1)
        out |= (smeared[row, np.clip(x - 1, 0, width - 1)] > 0) | (
            smeared[row, np.clip(x + w, 0, width - 1)] > 0
        )
    return out


def _split_centres(cx: np.ndarray, cy: np.ndarray, weight: np.ndarray, scale: float) -> np.ndarray:
    """Which line (0, 1, ...) each body component of a blob that holds several lines belongs to. The
    components' centres, taken along the blob's own slope (within +-4 degrees: perspective leaves lines
    slanted after the page is deskewed), pile up in one band per line; each band's peak is a line and
    each component joins the nearest peak."""
    xc = cx - cx.mean()
    bin_w = max(1.0, scale / 3)

    def histogram(deg: float) -> tuple[np.ndarray, float]:
        yy = cy + xc * math.tan(math.radians(deg))
        lo = yy.min() - 2 * scale
        idx = ((yy - lo) / bin_w).astype(np.int64)
        return np.bincount(idx, weights=weight, minlength=int(idx.max()) + int(4 * scale / bin_w)), lo

    def energy(deg: float) -> float:
        hist, _ = histogram(deg)
        return float((hist * hist).sum())

    best = float(max(np.arange(-4.0, 4.0 + 1e-6, 0.5), key=energy))
    best = float(max(np.arange(best - 0.4, best + 0.4 + 1e-6, 0.1), key=energy))
    hist, lo = histogram(best)
    dens = cv2.GaussianBlur(hist.astype(np.float32)[:, None], (1, 0), sigmaX=0.1, sigmaY=1.0)[:, 0]
    order = np.argsort(-dens)
    min_gap = 1.3 * scale / bin_w
    peaks: list[int] = []
    for i in order:
        if dens[i] < 0.15 * dens[order[0]]:
            break
        if all(abs(int(i) - p) >= min_gap for p in peaks):
            peaks.append(int(i))
    if len(peaks) <= 1:
        return np.zeros(len(cx), np.int64)
    centres = lo + (np.sort(np.asarray(peaks)) + 0.5) * bin_w
    yy = cy + xc * math.tan(math.radians(best))
    return np.abs(yy[:, None] - centres[None, :]).argmin(axis=1)


def _xy_order(boxes: list[tuple[int, int, int, int]], scale: float) -> list[int]:
    """Reading order of boxes by a recursive XY cut: each group is cut at its widest gap, a vertical one
    (side-by-side blocks, read left to right; at least GUTTER text scales wide) or a horizontal one (read
    top to bottom; two close lines whose ink rows overlap a little still count as apart); a group with no
    gap is read top to bottom."""

    def widest(ids: list[int], lo: int, hi: int) -> tuple[float, float]:
        """(gap, position) of the widest gap along the axis whose interval is (box[lo], box[hi])."""
        spans = sorted((boxes[i][lo], boxes[i][hi]) for i in ids)
        best, at = -math.inf, math.nan
        reach = spans[0][1]
        for a, b in spans[1:]:
            tolerance = 0.25 * min(b - a, reach - spans[0][0]) if lo == 1 else 0.0
            if a - reach > best and a >= reach - tolerance:
                best, at = a - reach, (reach + a) / 2
            reach = max(reach, b)
        return best, at

    def cut(ids: list[int]) -> list[int]:
        if len(ids) <= 1:
            return ids
        v_gap, v_at = widest(ids, 0, 2)
        h_gap, h_at = widest(ids, 1, 3)
        if v_gap >= GUTTER * scale and (v_gap >= h_gap or math.isnan(h_at)):
            first = [i for i in ids if (boxes[i][0] + boxes[i][2]) / 2 < v_at]
        elif not math.isnan(h_at):
            first = [i for i in ids if (boxes[i][1] + boxes[i][3]) / 2 < h_at]
        else:
            return sorted(ids, key=lambda i: ((boxes[i][1] + boxes[i][3]) / 2, boxes[i][0]))
        rest = [i for i in ids if i not in set(first)]
        if not first or not rest:
            return sorted(ids, key=lambda i: ((boxes[i][1] + boxes[i][3]) / 2, boxes[i][0]))
        return cut(first) + cut(rest)

    return cut(list(range(len(boxes))))


class LineFinder:
    """Classical line finding (see the module's description); `find(image)` -> PageLayout."""

    def __init__(self, smear: float = 1.8, pad: float = 0.15) -> None:
        self.smear = smear  # horizontal joining distance, in text scales
        self.pad = pad  # crop margin, in line heights

    def find(self, image: np.ndarray) -> PageLayout:
        gray = to_gray(image)
        h0, w0 = gray.shape
        shrink = max(1.0, max(h0, w0) / MAX_SIDE)
        if shrink > 1:
            gray = cv2.resize(gray, (int(w0 / shrink), int(h0 / shrink)), interpolation=cv2.INTER_AREA)
        mask, bg = ink_mask(gray)
        window = int(np.clip(4.5 * text_scale(mask), 24, BACKGROUND_WINDOW))
        if window < BACKGROUND_WINDOW - 8:  # small text: a tighter background follows thin UI bars
            mask, bg = ink_mask(gray, window)
        angle = estimate_skew(mask)
        if angle:
            inside, _ = rotate(np.ones_like(mask), angle, 0)
            mask, m = rotate(mask, angle, 0)
            gray_r, _ = rotate(gray, angle, 0)
            bg_r, _ = rotate(bg, angle, 0)
            gray_r = np.where(inside > 0, gray_r, bg_r).astype(np.uint8)
        else:
            m = np.array([[1.0, 0, 0], [0, 1.0, 0]])
            gray_r, bg_r = gray, bg
        lines, labels, scale = self._lines(mask)
        inv = cv2.invertAffineTransform(m)
        found: list[FoundLine] = []
        for k in _xy_order(lines, scale):
            x0, y0, x1, y1 = lines[k]
            lh = y1 - y0
            py, px = math.ceil(self.pad * lh) + 1, math.ceil(self.pad * 2 * lh) + 1
            cx0, cy0 = max(0, x0 - px), max(0, y0 - py)
            cx1, cy1 = min(mask.shape[1], x1 + px), min(mask.shape[0], y1 + py)
            crop = gray_r[cy0:cy1, cx0:cx1].copy()
            other = labels[cy0:cy1, cx0:cx1]
            foreign = (other > 0) & (other != k + 1)
            if foreign.any():
                # paint other lines' ink (grown by a pixel, for its anti-aliased rim) with background
                foreign = cv2.dilate(foreign.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
                crop[foreign] = bg_r[cy0:cy1, cx0:cx1][foreign]
            corners = np.array([[x0, y0, 1], [x1, y0, 1], [x1, y1, 1], [x0, y1, 1]], np.float64) @ inv.T
            bx0, by0 = np.floor(corners.min(0) * shrink).astype(int)
            bx1, by1 = np.ceil(corners.max(0) * shrink).astype(int)
            box = (max(0, int(bx0)), max(0, int(by0)), min(w0, int(bx1)), min(h0, int(by1)))
            found.append(FoundLine(box, crop, round(lh * shrink)))
        return PageLayout(found, angle, scale * shrink)

    def _lines(self, mask: np.ndarray) -> tuple[list[tuple[int, int, int, int]], np.ndarray, float]:
        """Line boxes (deskewed page), a label image of the lines' ink (line k has label k + 1) and the
        text scale (the typical height of a character body)."""
        n, labels, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
        empty = np.zeros(mask.shape, np.int32)
        if n <= 1:
            return [], empty, 10.0
        st = stats[1:].astype(np.int64)
        x, y, w, h, area = st[:, 0], st[:, 1], st[:, 2], st[:, 3], st[:, 4]
        page_h, page_w = mask.shape
        sized = (h >= 3) & (area >= 6)
        med = float(np.median(h[sized])) if sized.any() else 10.0
        core = h[sized & (h >= 0.5 * med)]
        scale = max(4.0, float(np.median(core)) if len(core) else med)  # as text_scale(mask)
        # not text: specks, rules and frames (long and thin), huge blobs (pictures, panel edges)
        fill = area / np.maximum(w * h, 1)
        keep = (area >= max(3, int(0.015 * scale * scale))) & ~((w > 12 * h) & (h <= max(3, scale / 4)))
        keep &= ~((h > 4 * scale) & ((h > page_h * 0.5) | (w > page_w * 0.8) | (fill < 0.05)))
        keep &= ~((w > 4 * scale) & (h > 4 * scale) & (fill < 0.08))  # a frame around something
        keep &= ~((w > 8 * h) & (h < 0.6 * scale) & (w > 3 * scale))  # rules, edges
        keep &= ~((h > 6 * w) & (h > 3 * scale))
        keep &= ~((fill > 0.85) & (h > 2 * scale) & (w > 2 * scale))  # solid: a corner, a button
        keep &= ~((fill > 0.8) & (w > 3 * scale))  # a solid band: the rim of a panel
        body = keep & (h >= 0.5 * scale)
        # 1. line bodies: the body components (consonants, digits, letters; not the small vowel signs
        #    and subscripts, which would bridge two close lines) joined by a horizontal smear
        lut = np.zeros(n, np.uint8)
        lut[1:][body] = 1
        k = max(3, int(self.smear * scale) | 1)
        smeared = cv2.dilate(lut[labels], np.ones((1, k), np.uint8))
        _, blob_of_pixel = cv2.connectedComponents(smeared, connectivity=8)
        ids = np.nonzero(body)[0]
        cy = cents[1:, 1]
        # marks at the height of a line's bodies (punctuation, dashes, an ellipsis's dots one after the
        # other) join its words
        inline = np.zeros_like(body)
        for _ in range(4):
            more = keep & ~body & ~inline & _within_bodies(smeared, x, y, w, h, cy, 0.3 * scale)
            if not more.any():
                break
            inline |= more
            lut[1:][more] = 1
            smeared = cv2.dilate(lut[labels], np.ones((1, k), np.uint8))
        if inline.any():
            _, blob_of_pixel = cv2.connectedComponents(smeared, connectivity=8)
            ids = np.nonzero(body | inline)[0]
        blob_of_label = np.zeros(n, np.int64)
        iy, ix = np.nonzero(lut[labels])
        blob_of_label[labels[iy, ix]] = blob_of_pixel[iy, ix]
        blob = blob_of_label[ids + 1]
        groups: dict[int, list[int]] = {}
        for i, b in zip(ids, blob, strict=True):
            groups.setdefault(int(b), []).append(int(i))
        # 2. a blob holding several lines (tall components of two close lines touching through the smear):
        #    its components' centres fall into separate bands, one per line
        cx = cents[1:, 0]
        lines: list[list[int]] = []
        for members in groups.values():
            m = np.asarray(members)
            top, bottom = y[m].min(), (y[m] + h[m]).max()
            local = max(scale, float(np.median(h[m])))  # a heading's characters are taller
            if bottom - top <= 1.6 * local or len(m) < 2:
                lines.append(members)
                continue
            part = _split_centres(cx[m], cy[m], area[m].astype(float), local)
            lines += [m[part == q].tolist() for q in range(int(part.max()) + 1) if (part == q).any()]
        # 3. fragments of one line far apart (the words of a large heading): side by side, of similar
        #    height, a gap of less than about their height
        band = np.array(
            [
                [
                    x[m].min(),
                    np.median(y[m]),
                    (x[m] + w[m]).max(),
                    np.median(y[m] + h[m]),
                ]
                for m in map(np.asarray, lines)
            ],
            float,
        )
        parent = list(range(len(lines)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        bh = band[:, 3] - band[:, 1]
        for i in range(len(lines)):
            for j in range(i + 1, len(lines)):
                lo, hi = min(bh[i], bh[j]), max(bh[i], bh[j])
                if lo < 0.55 * hi:
                    continue
                overlap = min(band[i, 3], band[j, 3]) - max(band[i, 1], band[j, 1])
                gap = max(band[j, 0] - band[i, 2], band[i, 0] - band[j, 2])
                if overlap >= 0.5 * lo and gap <= 1.8 * lo:
                    parent[root(i)] = root(j)
        merged: dict[int, list[int]] = {}
        for i, m in enumerate(lines):
            merged.setdefault(root(i), []).extend(m)
        lines = list(merged.values())
        band = np.array(
            [
                [x[m].min(), np.median(y[m]), (x[m] + w[m]).max(), np.median(y[m] + h[m])]
                for m in map(np.asarray, lines)
            ],
            float,
        )
        # a few components just over or under a longer line are its marks (a detached subscript as tall
        # as half a character), not a line of their own
        marks_too: list[int] = []
        bh = band[:, 3] - band[:, 1]
        bw = band[:, 2] - band[:, 0]
        dropped: set[int] = set()
        for i in np.argsort(bh):
            few = len(lines[i]) <= 3 and bw[i] <= 3 * scale
            ci = (band[i, 1] + band[i, 3]) / 2
            for j in range(len(lines)):
                if j == i or j in dropped or len(lines[j]) <= len(lines[i]):
                    continue
                if band[i, 2] < band[j, 0] - scale or band[i, 0] > band[j, 2] + scale:
                    continue
                reach = 1.2 * scale if few else 0.8 * bh[j]
                if (few or (bh[j] >= 1.6 * bh[i] and bw[i] <= 0.5 * bw[j])) and (
                    band[j, 1] - reach <= ci <= band[j, 3] + reach
                ):
                    dropped.add(int(i))
                    marks_too += lines[i]
                    break
        if dropped:
            keep_idx = [i for i in range(len(lines)) if i not in dropped]
            lines, band = [lines[i] for i in keep_idx], band[keep_idx]
        # 4. marks (vowel signs above, subscripts below, punctuation): each joins the line whose body
        #    band is nearest, among the lines it lies over, under or beside
        line_of = np.zeros(n, np.int32)  # by label; 0: no line
        for k_line, m in enumerate(lines, 1):
            line_of[np.asarray(m) + 1] = k_line
        marks = np.concatenate([np.nonzero(keep & ~body & ~inline)[0], np.asarray(marks_too, np.int64)])
        if len(marks) and len(lines):
            mx = (x[marks] + w[marks] / 2)[:, None]
            my = cy[marks][:, None]
            inside = (mx >= band[None, :, 0] - scale) & (mx <= band[None, :, 2] + scale)
            dist = np.maximum(np.maximum(band[None, :, 1] - my, my - band[None, :, 3]), 0)
            dist = np.where(inside, dist, np.inf)
            best = dist.argmin(axis=1)
            reach = np.maximum(1.2 * scale, 0.8 * (band[:, 3] - band[:, 1]))
            ok = dist[np.arange(len(marks)), best] <= reach[best]
            line_of[marks[ok] + 1] = best[ok] + 1
        line_labels = line_of[labels]
        out = []
        relabel = np.zeros(len(lines) + 1, np.int32)
        for k_line in range(1, len(lines) + 1):
            comps = np.nonzero(line_of == k_line)[0] - 1
            x0, y0 = int(x[comps].min()), int(y[comps].min())
            x1, y1 = int((x[comps] + w[comps]).max()), int((y[comps] + h[comps]).max())
            ink = int(area[comps].sum())
            if y1 - y0 < MIN_INK_HEIGHT or ink < 0.5 * scale * scale:
                continue
            bodies = comps[body[comps]]
            if len(bodies) <= 1 and (x1 - x0 < 2 * (y1 - y0) or ink > 0.5 * (x1 - x0) * (y1 - y0)):
                continue  # one solid or compact blob: a corner, a dot, an icon; not a line of text
            out.append((x0, y0, x1, y1))
            relabel[k_line] = len(out)
        return out, relabel[line_labels], scale


def find_lines(image: np.ndarray) -> PageLayout:
    """The text lines of a page image (grayscale or colour array), in reading order."""
    return LineFinder().find(image)
