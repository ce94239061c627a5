"""Validate a generated dataset with Great Expectations: labels, images, files, balance and splits.

``validate_dataset(uri)`` builds a pandas DataFrame from the manifest, adds per-image statistics computed by
reading every image from its shard (each shard is read once, whole, so local and s3:// datasets cost the same
number of requests), and runs one GX ExpectationSuite over it with an ephemeral GX context. Font and
difficulty balance are judged on a second, small DataFrame (one row per font / difficulty level) with a
second suite of two expectations. Every expectation becomes one :class:`CheckResult`; a failing one names a
few offending ids or values taken from GX's result (``unexpected_count``, ``partial_unexpected_index_list``).

The dataset's own files are judged on a third small DataFrame (one row per file fact): charset.json must be
present and self-consistent, and the card must name the same charset version, or training could not read
the dataset (it encodes labels with charset.json).

Checks (names as reported): has_rows, manifest_fields, charset_consistent, label_not_null, label_not_empty,
label_charset, label_normalized, label_length, image_height, image_width, shard_path, file_present,
checksum_match, image_decodes, image_size_match, image_not_blank, font_balance, difficulty_balance,
no_reserved_font, unique_ids, split_values, splits_disjoint. shard_path: every manifest shard is a path
inside the dataset (no absolute path, no `..`, no link out); images of other shards are never read.

A page dataset (config kind pages) is judged by the same checks, read for pages: each line of a page's text
in the charset and normalized, the longest line within the length limit, page sides within
PAGE_SIDES, splits disjoint over line texts; and one more, line_boxes: every record's `lines` are
non-empty boxes inside the image whose texts, joined by newlines, are the record's text.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from khmer_ocr import storage
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.dataset import (
    CARD,
    CHARSET,
    CONFIG,
    MANIFEST_FIELDS,
    SPLITS,
    Dataset,
    DatasetError,
    shard_problem,
)
from khmer_ocr.script import Charset, default_charset, normalize

__all__ = ["CheckResult", "DatasetError", "ValidationReport", "validate_dataset"]

REQUIRED_FIELDS = MANIFEST_FIELDS
PAGE_FIELDS = ("style", "lines")  # what a record of a page dataset (kind pages) has besides
PAGE_SIDES = (64, 8192)  # a page image's height and width, px
# Per-image columns; None where unknown (no bytes to check, or nothing decoded), which GX counts as missing.
IMAGE_COLUMNS = (
    *("file_present", "checksum_ok", "decodes", "size_ok", "decoded_width", "decoded_height"),
    *("pixel_std", "contrast", "blank"),
)
TEST_SPLITS = ("test", "test_unseen_font")
MIN_WIDTH = 8
DEFAULT_MAX_TEXT_LENGTH = 200  # when the generator config (and so the level lengths) cannot be read
# Blank / near-blank images, on 0..255 grayscale. The contrast is p99 - p1: the hardest generated lines
# (level 5: contrast x0.45, gray ink, textured paper) go down to std ~6 and p95 - p5 ~20 while still
# readable, so p95 - p5 < 20 would flag real lines; p99 - p1 stays above ~24 for them.
BLANK_MAX_STD = 3.0
BLANK_MAX_CONTRAST = 12.0
MIN_BALANCE_ROWS = 200  # below this, shares are too noisy to judge balance
# fonts are judged only with this many train-font rows per font expected (39 fonts: 1,560 rows); fewer
# leave a share at the mercy of chance, the more so for fonts that cannot shape every line (no Latin)
MIN_ROWS_PER_FONT = 40
BALANCE_LOW, BALANCE_HIGH = 0.25, 4.0  # allowed share, as a multiple of the expected share
TOO_FEW_ROWS = "too few rows to judge balance"
SHOWN = 5  # offending ids / values named in a failure's details
SUITE, BALANCE_SUITE, FILES_SUITE = (
    "khmer_ocr.dataset",
    "khmer_ocr.dataset.balance",
    "khmer_ocr.dataset.files",
)
REPORT_JSON, REPORT_HTML = "validation.json", "validation.html"


@dataclass
class CheckResult:
    name: str
    success: bool
    expectation: str  # the GX expectation type, e.g. expect_column_values_to_be_unique
    details: str  # a short human summary, e.g. "3 of 400 rows: 000000012 'Ω', ..."


@dataclass
class ValidationReport:
    dataset: str
    version: str | None
    success: bool
    checks: list[CheckResult]
    stats: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.success]

    def check(self, name: str) -> CheckResult:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r} (checks: {[c.name for c in self.checks]})")

    def summary(self) -> str:
        """One line per failed check, then a PASSED / FAILED line with counts."""
        rows = self.stats.get("rows", "?")
        lines = [f"dataset {self.dataset} ({self.version or 'no version'}): {rows} rows"]
        lines += [f"  FAILED {c.name}: {c.details}" for c in self.failed]
        n, bad = len(self.checks), len(self.failed)
        lines.append(f"FAILED: {bad} of {n} checks failed" if bad else f"PASSED: all {n} checks passed")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


# ------------------------------------------------------------------------------------------------ rules
@dataclass(frozen=True)
class _Rules:
    """What the dataset's own config and card say its rows must look like."""

    image_height: int
    max_width: int
    max_text_length: int
    difficulty_weights: dict[int, float]  # normalized to sum 1
    reserved_families: tuple[str, ...]
    train_fonts: tuple[str, ...]  # fonts with role "train" in the card (empty when unknown)
    charset: Charset
    charset_note: str
    kind: str = "lines"  # lines, or pages: one page image per record, text = its lines joined by newlines

    @property
    def fields(self) -> tuple[str, ...]:
        return (*REQUIRED_FIELDS, *PAGE_FIELDS) if self.kind == "pages" else REQUIRED_FIELDS


def _rules(ds: Dataset) -> tuple[_Rules, dict]:
    import yaml

    card: dict = {}
    if storage.exists(storage.join(ds.uri, CARD)):
        try:
            card = ds.card
        except (storage.StorageError, ValueError):
            card = {}
    cfg: dict = {}
    try:
        cfg = yaml.safe_load(storage.read_text(storage.join(ds.uri, CONFIG))) or {}
    except (storage.StorageError, yaml.YAMLError):
        cfg = {}
    if not isinstance(cfg, dict) or not cfg:
        cfg = card.get("generator_config") or {}
    default = DataConfig()
    lengths = [lv.get("length") for lv in cfg.get("levels") or [] if isinstance(lv, dict)]
    lengths = [int(x[1]) for x in lengths if isinstance(x, list | tuple) and len(x) == 2]
    weights = {int(k): float(v) for k, v in (cfg.get("difficulty") or default.difficulty).items()}
    kind = str(cfg.get("kind") or "lines")
    if kind == "pages":  # a page's difficulty is its style's level
        from khmer_ocr.data.pages import STYLE_LEVEL

        styles = (cfg.get("pages") or {}).get("styles") or default.pages.styles
        weights = {STYLE_LEVEL[k]: float(v) for k, v in styles.items() if k in STYLE_LEVEL}
    total = sum(weights.values()) or 1.0
    fonts_cfg = cfg.get("fonts") or {}
    if "reserved_families" in fonts_cfg:
        reserved = fonts_cfg["reserved_families"] or []
    else:
        reserved = card.get("reserved_font_families", default.fonts.reserved_families)
    try:
        charset, note = ds.charset, "charset.json"
    except (storage.StorageError, ValueError, KeyError, TypeError) as exc:
        charset, note = default_charset(), f"default charset ({CHARSET} unreadable: {exc})"
    rules = _Rules(
        image_height=int(cfg.get("image_height", card.get("image_height", default.image_height))),
        max_width=int(cfg.get("max_width", default.max_width)),
        max_text_length=max(lengths) if lengths else DEFAULT_MAX_TEXT_LENGTH,
        difficulty_weights={k: v / total for k, v in sorted(weights.items())},
        reserved_families=tuple(reserved),
        train_fonts=tuple(f["name"] for f in card.get("fonts", []) if f.get("role") == "train"),
        charset=charset,
        charset_note=note,
        kind=kind,
    )
    return rules, card


# ------------------------------------------------------------------------------------------------ images
def _image_stats(ds: Dataset, records: list[dict], progress: bool) -> list[dict]:
    """Per-record image statistics; each shard is read once, whole. Unknown values (no bytes) are None."""
    stats: list[dict] = [{} for _ in records]
    by_shard: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        by_shard.setdefault(str(rec.get("shard")), []).append(i)
    root = None if storage.is_s3(ds.uri) else Path(ds.uri).resolve()
    with tqdm(total=len(records), unit="img", desc="validate images", disable=not progress) as bar:
        for shard, rows in by_shard.items():
            data: bytes | None = None
            if shard_problem(records[rows[0]].get("shard"), root) is None:  # never read outside the dataset
                try:
                    data = storage.read_bytes(storage.join(ds.uri, shard))
                except (storage.StorageError, OSError, ValueError):
                    data = None
            for i in rows:
                stats[i] = _one_image(records[i], data)
                bar.update(1)
    return stats


def _one_image(rec: dict, shard: bytes | None) -> dict:
    out: dict[str, Any] = dict.fromkeys(IMAGE_COLUMNS)
    out["file_present"] = False
    try:
        offset, size = int(rec["offset"]), int(rec["size"])
    except (KeyError, TypeError, ValueError):
        return out
    if shard is None or offset < 0 or size <= 0 or offset + size > len(shard):
        return out
    png = shard[offset : offset + size]
    out["file_present"] = True
    out["checksum_ok"] = "sha256:" + hashlib.sha256(png).hexdigest() == rec.get("checksum")
    try:
        with Image.open(io.BytesIO(png)) as im:
            gray = np.asarray(im.convert("L"), dtype=np.float32)
    except Exception:  # any decoder error means: not an image
        out["decodes"] = False
        return out
    out["decodes"] = True
    h, w = gray.shape
    out["decoded_width"], out["decoded_height"] = int(w), int(h)
    out["size_ok"] = (w, h) == (rec.get("width"), rec.get("height"))
    if gray.size == 0:
        out["pixel_std"], out["contrast"], out["blank"] = 0.0, 0.0, True
        return out
    p1, p99 = np.percentile(gray, [1, 99])
    std, contrast = float(gray.std()), float(p99 - p1)
    out["pixel_std"], out["contrast"] = round(std, 2), round(contrast, 2)
    out["blank"] = std < BLANK_MAX_STD or contrast < BLANK_MAX_CONTRAST
    return out


# ------------------------------------------------------------------------------------------------ frames
def _page_lines_problem(rec: dict, image: dict) -> str | None:
    """Why a page record's `lines` do not describe its image (None when they do): a non-empty list of
    {"box": [x0, y0, x1, y1], "text"} with each box non-empty and inside the image, and the texts joined
    by newlines equal to the record's text."""
    lines = rec.get("lines")
    if not isinstance(lines, list) or not lines:
        return "no lines"
    w = image.get("decoded_width") or rec.get("width")
    h = image.get("decoded_height") or rec.get("height")
    texts = []
    for k, ln in enumerate(lines):
        box = ln.get("box") if isinstance(ln, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)):
            return f"line {k}: no box of 4 integers"
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 and 0 <= y0 < y1) or (w and x1 > w) or (h and y1 > h):
            return f"line {k}: box {box} is empty or outside the {w}x{h} image"
        if not isinstance(ln.get("text"), str) or not ln["text"]:
            return f"line {k}: no text"
        texts.append(ln["text"])
    if "\n".join(texts) != rec.get("text"):
        return "the lines' texts joined by newlines differ from the text"
    return None


def _rows_frame(records: list[dict], images: list[dict], root: Path | None = None, kind: str = "lines"):
    import pandas as pd

    pages = kind == "pages"
    fields = (*REQUIRED_FIELDS, *PAGE_FIELDS) if pages else REQUIRED_FIELDS
    df = pd.DataFrame.from_records(records)
    for name in fields:
        if name not in df.columns:
            df[name] = None
    problems = {
        s: shard_problem(s, root)
        for s in {r.get("shard") for r in records if isinstance(r.get("shard"), str)}
    }
    df["shard_inside"] = pd.Series(
        [
            None if _isnull(r.get("shard")) else problems.get(r.get("shard"), "not a path") is None
            for r in records
        ],
        index=df.index,
        dtype=object,
    )
    df["_row"] = np.arange(len(df))
    df["fields_complete"] = df[list(fields)].notna().all(axis=1)
    df["id"] = df["id"].map(lambda x: None if _isnull(x) else str(x))
    df["text"] = df["text"].map(lambda t: t if isinstance(t, str) else None)

    def norm(t: object) -> str | None:  # a page's text: each of its lines normalized
        if not isinstance(t, str):
            return None
        return "\n".join(normalize(ln) for ln in t.split("\n")) if pages else normalize(t)

    df["text_normalized"] = df["text"].map(norm)
    # the texts that decide splits: a line's text; each line of a page
    units = df["text"].map(lambda t: (t.split("\n") if pages else [t]) if isinstance(t, str) else [])
    train = {u for us in units[df["split"] == "train"] for u in us}
    test = {u for us in units[df["split"].isin(TEST_SPLITS)] for u in us}
    shared = train & test
    df["text_in_train_and_test"] = df["split"].isin(("train", *TEST_SPLITS)) & units.map(
        lambda us: any(u in shared for u in us)
    )
    df["longest_line"] = units.map(lambda us: max((len(u) for u in us), default=0))
    if pages:
        problems = [_page_lines_problem(r, im) for r, im in zip(records, images, strict=True)]
        df["lines_problem"] = pd.Series(problems, index=df.index, dtype=object)
        df["lines_ok"] = pd.Series([p is None for p in problems], index=df.index, dtype=object)
    for col in IMAGE_COLUMNS:
        df[col] = pd.Series([im.get(col) for im in images], index=df.index, dtype=object)
    return df


def _balance_frame(df, rules: _Rules):
    """One row per train font and per difficulty level: its share and the share expected of it."""
    import pandas as pd

    rows: list[dict] = []
    train = df[df["split"] == "train"]
    if train.empty:  # an evaluation-only set (DataConfig.splits): its val/test lines use the train fonts
        train = df[df["split"] != "test_unseen_font"]
    counts = train["font"].value_counts()
    fonts = list(dict.fromkeys([*rules.train_fonts, *map(str, counts.index)]))
    n = len(rules.train_fonts) or len(counts)
    for font in fonts:
        share = float(counts.get(font, 0)) / max(len(train), 1)
        rows.append(
            {
                "id": f"font {font}",
                "kind": "font",
                "value": font,
                "rows": int(counts.get(font, 0)),
                "share": share,
                "expected": 1 / n,
                "font_share": share,
                "difficulty_ratio": None,
            }
        )
    levels = pd.to_numeric(df["difficulty"], errors="coerce").value_counts()
    observed = {int(k): int(v) for k, v in levels.items() if not math.isnan(k)}
    for level in sorted(set(rules.difficulty_weights) | set(observed)):
        w = rules.difficulty_weights.get(level, 0.0)
        share = observed.get(level, 0) / max(len(df), 1)
        ratio = share / w if w > 0 else (1.0 if share == 0 else math.inf)
        rows.append(
            {
                "id": f"difficulty {level}",
                "kind": "difficulty",
                "value": str(level),
                "rows": observed.get(level, 0),
                "share": share,
                "expected": w,
                "font_share": None,
                "difficulty_ratio": ratio,
            }
        )
    frame = pd.DataFrame.from_records(
        rows, columns=["id", "kind", "value", "rows", "share", "expected", "font_share", "difficulty_ratio"]
    )
    # Over-represented groups first (largest first), then under-represented ones (smallest first): the few
    # offenders named in a failure are then the ones that matter most.
    ratio = frame["share"].to_numpy(float) / np.maximum(frame["expected"].to_numpy(float), 1e-12)
    order = np.where(ratio > BALANCE_HIGH, -ratio, np.where(ratio < BALANCE_LOW, 1e6 + ratio, 2e6))
    frame = frame.assign(_off=order).sort_values(["kind", "_off"], ascending=[False, True], kind="stable")
    frame = frame.drop(columns="_off").reset_index(drop=True)
    frame["_row"] = np.arange(len(frame))
    frame["font_share"] = frame["font_share"].astype(float)
    frame["difficulty_ratio"] = frame["difficulty_ratio"].astype(float)
    return frame, n


# ------------------------------------------------------------------------------------------------ checks
def _short(text: Any, limit: int = 24) -> str:
    s = str(text)
    return repr(s if len(s) <= limit else s[: limit - 1] + "…")


@dataclass
class _Check:
    name: str
    expectation: Any  # a GX expectation instance
    describe: Callable[[Any], str]  # row (a pandas Series) -> what to show of an offending row
    noun: str = "rows"  # what the checked frame's rows are
    rule: str = ""  # what every row must satisfy, said once in a failure's details


def _row_checks(gxe: Any, rules: _Rules) -> list[_Check]:
    pattern = rules.charset.pattern
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"  # "$" would also accept a trailing newline
    pages = rules.kind == "pages"
    if pages:  # lines of charset characters joined by single newlines
        cls = pattern[1 : -len(r"+\Z")]
        pattern = f"^{cls}+(?:\n{cls}+)*\\Z"
    charset = rules.charset

    def c(name: str, expectation: Any, describe: Callable[[Any], str]) -> _Check:
        expectation.meta = {"check": name}
        return _Check(name, expectation, describe)

    def rid(r: Any) -> str:
        return str(r["id"])

    def missing(r: Any) -> str:
        return f"{rid(r)} (no {', '.join(k for k in rules.fields if _isnull(r[k]))})"

    def unknown(r: Any) -> str:
        chars = sorted(charset.unknown(r["text"].replace("\n", "") if pages else r["text"]))
        shown = " ".join(f"{ch!r} U+{ord(ch):04X}" for ch in chars[:3]) or "(empty)"
        return f"{rid(r)} {shown}"

    checks = [
        c("has_rows", gxe.ExpectTableRowCountToBeBetween(min_value=1), rid),
        c(
            "manifest_fields",
            gxe.ExpectColumnValuesToBeInSet(column="fields_complete", value_set=[True]),
            missing,
        ),
        c("label_not_null", gxe.ExpectColumnValuesToNotBeNull(column="text"), rid),
        c("label_not_empty", gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1), rid),
        c("label_charset", gxe.ExpectColumnValuesToMatchRegex(column="text", regex=pattern), unknown),
        c(
            "label_normalized",
            gxe.ExpectColumnPairValuesToBeEqual(column_A="text", column_B="text_normalized"),
            lambda r: f"{rid(r)} {_short(r['text'])} != {_short(r['text_normalized'])}",
        ),
        c(
            "label_length",
            gxe.ExpectColumnValuesToBeBetween(
                column="longest_line", min_value=1, max_value=rules.max_text_length
            )
            if pages
            else gxe.ExpectColumnValueLengthsToBeBetween(
                column="text", min_value=1, max_value=rules.max_text_length
            ),
            lambda r: f"{rid(r)} ({r['longest_line'] if pages else len(r['text'])} chars)",
        ),
        c(
            "image_height",
            gxe.ExpectColumnValuesToBeBetween(
                column="height", min_value=PAGE_SIDES[0], max_value=PAGE_SIDES[1]
            )
            if pages
            else gxe.ExpectColumnValuesToBeInSet(column="height", value_set=[rules.image_height]),
            lambda r: f"{rid(r)} height={r['height']}",
        ),
        c(
            "image_width",
            gxe.ExpectColumnValuesToBeBetween(
                column="width",
                min_value=PAGE_SIDES[0] if pages else MIN_WIDTH,
                max_value=PAGE_SIDES[1] if pages else rules.max_width,
            ),
            lambda r: f"{rid(r)} width={r['width']}",
        ),
        c(
            "shard_path",
            gxe.ExpectColumnValuesToBeInSet(column="shard_inside", value_set=[True]),
            lambda r: f"{rid(r)} {_short(r['shard'], 48)}",
        ),
        c(
            "file_present",
            gxe.ExpectColumnValuesToBeInSet(column="file_present", value_set=[True]),
            lambda r: f"{rid(r)} ({r['shard']})",
        ),
        c("checksum_match", gxe.ExpectColumnValuesToBeInSet(column="checksum_ok", value_set=[True]), rid),
        c("image_decodes", gxe.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True]), rid),
        c(
            "image_size_match",
            gxe.ExpectColumnValuesToBeInSet(column="size_ok", value_set=[True]),
            lambda r: (
                f"{rid(r)} decoded {r['decoded_width']}x{r['decoded_height']}, "
                f"manifest {r['width']}x{r['height']}"
            ),
        ),
        c(
            "image_not_blank",
            gxe.ExpectColumnValuesToBeInSet(column="blank", value_set=[False]),
            lambda r: f"{rid(r)} (std {r['pixel_std']}, contrast {r['contrast']})",
        ),
        c(
            "no_reserved_font",
            gxe.ExpectColumnValuesToNotBeInSet(column="font_family", value_set=list(rules.reserved_families)),
            lambda r: f"{rid(r)} {r['font_family']!r}",
        ),
        c("unique_ids", gxe.ExpectColumnValuesToBeUnique(column="id"), rid),
        c(
            "split_values",
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
            lambda r: f"{rid(r)} split={r['split']!r}",
        ),
        c(
            "splits_disjoint",
            gxe.ExpectColumnValuesToBeInSet(column="text_in_train_and_test", value_set=[False]),
            lambda r: f"{rid(r)} [{r['split']}] {_short(r['text'])}",
        ),
    ]
    if pages:
        checks.append(
            c(
                "line_boxes",
                gxe.ExpectColumnValuesToBeInSet(column="lines_ok", value_set=[True]),
                lambda r: f"{rid(r)}: {r['lines_problem']}",
            )
        )
    if not rules.reserved_families:  # GX refuses an empty value set: there is nothing to exclude
        checks = [ch for ch in checks if ch.name != "no_reserved_font"]
    return checks


def _balance_checks(gxe: Any, n_fonts: int) -> list[_Check]:
    lo, hi = BALANCE_LOW / n_fonts, BALANCE_HIGH / n_fonts
    font = gxe.ExpectColumnValuesToBeBetween(column="font_share", min_value=lo, max_value=hi)
    font.meta = {"check": "font_balance"}
    level = gxe.ExpectColumnValuesToBeBetween(
        column="difficulty_ratio", min_value=BALANCE_LOW, max_value=BALANCE_HIGH
    )
    level.meta = {"check": "difficulty_balance"}
    return [
        _Check(
            "font_balance",
            font,
            lambda r: f"{r['value']} {r['share']:.3f}",
            "train fonts",
            f"share of train rows {lo:.3f}..{hi:.3f}",
        ),
        _Check(
            "difficulty_balance",
            level,
            lambda r: (
                f"level {r['value']} {r['share']:.3f} (allowed "
                f"{BALANCE_LOW * r['expected']:.3f}..{BALANCE_HIGH * r['expected']:.3f})"
            ),
            "difficulty levels",
            "their share of rows",
        ),
    ]


def _files_frame(rules: _Rules, card: dict, card_error: str | None):
    """One row per fact about the dataset's own files that training relies on: charset.json present and
    self-consistent, the card readable and naming the same charset version."""
    import pandas as pd

    charset_ok = rules.charset_note == CHARSET
    rows = [
        {
            "id": CHARSET,
            "ok": charset_ok,
            "problem": "" if charset_ok else rules.charset_note.removeprefix("default charset ")[1:-1],
        }
    ]
    if card_error is not None:
        rows.append({"id": CARD, "ok": False, "problem": card_error})
    else:
        named = card.get("charset_version")
        same = charset_ok and named == rules.charset.version
        problem = (
            ""
            if same
            else f"charset_version {named!r}, {CHARSET} is "
            + (repr(rules.charset.version) if charset_ok else "unreadable")
        )
        rows.append({"id": f"{CARD} charset_version", "ok": same, "problem": problem})
    frame = pd.DataFrame.from_records(rows, columns=["id", "ok", "problem"])
    frame["ok"] = frame["ok"].astype(object)
    frame["_row"] = np.arange(len(frame))
    return frame


def _files_checks(gxe: Any) -> list[_Check]:
    expectation = gxe.ExpectColumnValuesToBeInSet(column="ok", value_set=[True])
    expectation.meta = {"check": "charset_consistent"}
    return [
        _Check(
            "charset_consistent",
            expectation,
            lambda r: f"{r['id']}: {r['problem']}",
            "dataset files",
        )
    ]


def _isnull(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


# ------------------------------------------------------------------------------------------------ GX
_GX_READY = False


def _gx():
    """Import Great Expectations (slow: seconds) and quiet its logging, once."""
    global _GX_READY
    import great_expectations as gx
    import great_expectations.expectations as gxe

    if not _GX_READY:  # some GX modules set their own logger to INFO: quiet them all
        for name in ["great_expectations", *logging.Logger.manager.loggerDict]:
            if name.startswith("great_expectations"):
                logging.getLogger(name).setLevel(logging.ERROR)
        _GX_READY = True
    return gx, gxe


def _run_suite(gx: Any, context: Any, name: str, checks: list[_Check], frame: Any) -> list[CheckResult]:
    """Run one suite on a whole-dataframe batch; each expectation's result becomes a CheckResult."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas(f"{name}.source")
        .add_dataframe_asset(f"{name}.frame")
        .add_batch_definition_whole_dataframe(f"{name}.all")
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    for ch in checks:
        suite.add_expectation(ch.expectation)
    definition = gx.ValidationDefinition(name=name, data=batch, suite=suite)
    definition = context.validation_definitions.add(definition)
    result_format = {
        "result_format": "SUMMARY",
        "unexpected_index_column_names": ["_row", "id"],
        "partial_unexpected_count": SHOWN,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = definition.run(batch_parameters={"dataframe": frame}, result_format=result_format)
    by_name = {ch.name: ch for ch in checks}
    results = []
    for r in outcome.results:
        check = by_name[r.expectation_config.meta["check"]]
        if r.exception_info and r.exception_info.get("raised_exception"):
            msg = r.exception_info.get("exception_message") or "GX raised an exception"
            results.append(CheckResult(check.name, False, r.expectation_config.type, f"error: {msg}"))
            continue
        results.append(
            CheckResult(check.name, bool(r.success), r.expectation_config.type, _details(r, check, frame))
        )
    order = {ch.name: k for k, ch in enumerate(checks)}
    return sorted(results, key=lambda c: order[c.name])


def _details(r: Any, check: _Check, frame: Any) -> str:
    res = r.result or {}
    if "observed_value" in res:  # a table-level expectation: no offending rows to name
        return f"{res['observed_value']} {check.noun}" + ("" if r.success else " (at least 1 expected)")
    missing = int(res.get("missing_count") or 0)  # null values: not applicable (e.g. no bytes to decode)
    total = int(res.get("element_count", len(frame))) - missing
    bad, noun = int(res.get("unexpected_count") or 0), check.noun
    if r.success:
        na = f" ({missing} not applicable)" if missing and noun == "rows" else ""
        return f"all {total} {noun} ok{na}"
    shown = []
    for item in res.get("partial_unexpected_index_list") or []:
        row = frame.iloc[int(item["_row"])] if isinstance(item, dict) and "_row" in item else None
        if row is not None:
            try:
                shown.append(check.describe(row))
            except Exception:  # a description must never hide the failure itself
                shown.append(str(row.get("id")))
    if not shown:
        shown = [_short(v) for v in (res.get("partial_unexpected_list") or [])[:SHOWN]]
    more = ", …" if bad > len(shown) else ""
    rule = f" outside {check.rule}" if check.rule else ""
    return f"{bad} of {total} {noun}{rule}: " + ", ".join(shown[:SHOWN]) + more


# ------------------------------------------------------------------------------------------------ main
def validate_dataset(
    uri: str | Path, report_dir: str | Path | None = None, progress: bool = True
) -> ValidationReport:
    """Validate the dataset at uri (a folder or s3:// prefix); write validation.json/.html to report_dir."""
    start = time.perf_counter()
    uri = str(uri)
    ds = Dataset(uri, check_shards=False)  # raises DatasetError without a manifest; shard_path checks shards
    rules, card = _rules(ds)
    card_error = None
    try:
        ds.card  # noqa: B018 (training reads it: it must parse)
    except (storage.StorageError, ValueError) as exc:
        card_error = f"unreadable ({exc})"
    records = ds.records
    images = _image_stats(ds, records, progress)
    df = _rows_frame(records, images, None if storage.is_s3(uri) else Path(uri).resolve(), rules.kind)
    read_s = time.perf_counter() - start

    gx, gxe = _gx()
    gx_start = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    checks = _run_suite(gx, context, SUITE, _row_checks(gxe, rules), df)
    files = _run_suite(gx, context, FILES_SUITE, _files_checks(gxe), _files_frame(rules, card, card_error))
    at = next(k for k, c in enumerate(checks) if c.name == "manifest_fields") + 1
    checks[at:at] = files
    balance, n_fonts = _balance_frame(df, rules)
    if len(df) < MIN_BALANCE_ROWS:
        balance_results = [
            CheckResult("font_balance", True, "expect_column_values_to_be_between", TOO_FEW_ROWS),
            CheckResult("difficulty_balance", True, "expect_column_values_to_be_between", TOO_FEW_ROWS),
        ]
    elif n_fonts == 0:
        balance_results = [
            CheckResult("font_balance", False, "expect_column_values_to_be_between", "no train rows"),
            *_run_suite(gx, context, BALANCE_SUITE, _balance_checks(gxe, 1)[1:], balance),
        ]
    elif balance.loc[balance["kind"] == "font", "rows"].sum() < MIN_ROWS_PER_FONT * n_fonts:
        too_few = f"{TOO_FEW_ROWS} per font (fewer than {MIN_ROWS_PER_FONT} train-font rows per font)"
        balance_results = [
            CheckResult("font_balance", True, "expect_column_values_to_be_between", too_few),
            *_run_suite(gx, context, BALANCE_SUITE, _balance_checks(gxe, n_fonts)[1:], balance),
        ]
    else:
        balance_results = _run_suite(gx, context, BALANCE_SUITE, _balance_checks(gxe, n_fonts), balance)
    at = next(k for k, c in enumerate(checks) if c.name == "image_not_blank") + 1
    checks[at:at] = balance_results
    gx_s = time.perf_counter() - gx_start

    stats = _stats(df, balance, rules, card)
    stats["seconds"] = {
        "read_images": round(read_s, 3),
        "gx": round(gx_s, 3),
        "total": round(time.perf_counter() - start, 3),
    }
    report = ValidationReport(
        dataset=uri,
        version=card.get("version"),
        success=all(c.success for c in checks),
        checks=checks,
        stats=stats,
    )
    if report_dir is not None:
        write_report(report, report_dir)
    return report


def _stats(df: Any, balance: Any, rules: _Rules, card: dict) -> dict:
    def counts(col: str) -> dict:
        return {str(k): int(v) for k, v in df[col].value_counts(dropna=False).sort_index().items()}

    width = df["decoded_width"].dropna().astype(float)
    std = df["pixel_std"].dropna().astype(float)
    return {
        "rows": len(df),
        "splits": counts("split"),
        "fonts": counts("font"),
        "difficulty": counts("difficulty"),
        "sources": counts("source"),
        "images": {
            "missing": int((df["file_present"] != True).sum()),  # noqa: E712 (object column)
            "checksum_mismatch": int((df["checksum_ok"] == False).sum()),  # noqa: E712
            "undecodable": int((df["decodes"] == False).sum()),  # noqa: E712
            "blank": int((df["blank"] == True).sum()),  # noqa: E712
            "width_min": int(width.min()) if len(width) else None,
            "width_mean": round(float(width.mean()), 1) if len(width) else None,
            "width_max": int(width.max()) if len(width) else None,
            "pixel_std_min": round(float(std.min()), 2) if len(std) else None,
            "pixel_std_mean": round(float(std.mean()), 2) if len(std) else None,
        },
        "text_length_max": int(df["text"].dropna().map(len).max()) if df["text"].notna().any() else 0,
        "balance": [
            {
                "kind": r.kind,
                "value": r.value,
                "rows": int(r.rows),
                "share": round(float(r.share), 4),
                "expected": round(float(r.expected), 4),
            }
            for r in balance.itertuples()
        ],
        "rules": {
            "image_height": rules.image_height,
            "width": [MIN_WIDTH, rules.max_width],
            "text_length": [1, rules.max_text_length],
            "reserved_families": list(rules.reserved_families),
            "train_fonts": len(rules.train_fonts),
            "charset": f"{rules.charset.version} ({rules.charset_note})",
            "blank": f"std < {BLANK_MAX_STD} or p99-p1 < {BLANK_MAX_CONTRAST}",
            "balance_min_rows": MIN_BALANCE_ROWS,
        },
        "card_version": card.get("version"),
    }


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


# ------------------------------------------------------------------------------------------------ reports
def write_report(report: ValidationReport, report_dir: str | Path) -> None:
    """Write validation.json and validation.html into report_dir (a folder or s3:// prefix)."""
    report_dir = str(report_dir)
    data = report.to_dict()
    storage.write_text(storage.join(report_dir, REPORT_JSON), json.dumps(data, ensure_ascii=False, indent=1))
    storage.write_text(storage.join(report_dir, REPORT_HTML), report_html(report))


def report_html(report: ValidationReport) -> str:
    """A self-contained HTML page: the checks (pass/fail coloured) and the stats."""
    e = html.escape
    rows = "\n".join(
        f'<tr class="{"pass" if c.success else "fail"}"><td>{e(c.name)}</td>'
        f"<td>{'PASS' if c.success else 'FAIL'}</td><td><code>{e(c.expectation)}</code></td>"
        f"<td>{e(c.details)}</td></tr>"
        for c in report.checks
    )
    n_bad = sum(not c.success for c in report.checks)
    verdict = "PASSED" if report.success else f"FAILED ({n_bad} of {len(report.checks)} checks)"
    stats = e(json.dumps(_jsonable(report.stats), ensure_ascii=False, indent=1))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Validation of {e(report.dataset)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
tr.pass td:nth-child(2) {{ background: #c8f7c5; color: #145214; font-weight: bold; }}
tr.fail td:nth-child(2) {{ background: #f7c5c5; color: #7a1010; font-weight: bold; }}
.verdict {{ font-size: 1.3em; font-weight: bold; color: {"#145214" if report.success else "#7a1010"}; }}
pre {{ background: #f5f5f5; padding: 1em; }}
</style></head>
<body>
<h1>Dataset validation</h1>
<p>Dataset <code>{e(report.dataset)}</code>, version <code>{e(str(report.version))}</code>,
{e(str(report.stats.get("rows", "?")))} rows.</p>
<p class="verdict">{e(verdict)}</p>
<table>
<tr><th>check</th><th>result</th><th>expectation</th><th>details</th></tr>
{rows}
</table>
<h2>Statistics</h2>
<pre>{stats}</pre>
</body></html>
"""
