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

Modules: rules (the limits, and the rules read from the dataset's config and card), images (per-image
statistics), frames (the DataFrames the suites run on), suite (the expectations, run with GX), report
(CheckResult, ValidationReport, validation.json and validation.html).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from khmer_ocr import storage
from khmer_ocr.data.reader import Dataset
from khmer_ocr.data.validation.frames import balance_frame, files_frame, rows_frame
from khmer_ocr.data.validation.images import BLANK_MAX_CONTRAST, BLANK_MAX_STD, image_stats
from khmer_ocr.data.validation.report import (
    REPORT_HTML,
    REPORT_JSON,
    CheckResult,
    ValidationReport,
    write_report,
)
from khmer_ocr.data.validation.rules import (
    MIN_BALANCE_ROWS,
    MIN_ROWS_PER_FONT,
    MIN_WIDTH,
    TOO_FEW_ROWS,
    Rules,
    read_rules,
)
from khmer_ocr.data.validation.suite import (
    BALANCE_SUITE,
    FILES_SUITE,
    SUITE,
    balance_checks,
    files_checks,
    gx_modules,
    row_checks,
    run_suite,
)

__all__ = [
    "REPORT_HTML",
    "REPORT_JSON",
    "CheckResult",
    "ValidationReport",
    "validate_dataset",
    "write_report",
]


def validate_dataset(
    uri: str | Path, report_dir: str | Path | None = None, progress: bool = True, workers: int = 0
) -> ValidationReport:
    """Validate the dataset at uri (a folder or s3:// prefix); write validation.json/.html to report_dir.
    Images are measured by `workers` processes (0: one per CPU core)."""
    start = time.perf_counter()
    uri = str(uri)
    ds = Dataset(uri, check_shards=False)  # raises DatasetError without a manifest; shard_path checks shards
    rules, card = read_rules(ds)
    card_error = None
    try:
        ds.card  # noqa: B018 (training reads it: it must parse)
    except (storage.StorageError, ValueError) as exc:
        card_error = f"unreadable ({exc})"
    records = ds.records
    images = image_stats(ds, records, progress, workers)
    df = rows_frame(records, images, None if storage.is_s3(uri) else Path(uri).resolve(), rules.kind)
    read_s = time.perf_counter() - start

    gx, gxe = gx_modules()
    gx_start = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    checks = run_suite(gx, context, SUITE, row_checks(gxe, rules), df)
    files = run_suite(gx, context, FILES_SUITE, files_checks(gxe), files_frame(rules, card, card_error))
    at = next(k for k, c in enumerate(checks) if c.name == "manifest_fields") + 1
    checks[at:at] = files
    balance, n_fonts = balance_frame(df, rules)
    if len(df) < MIN_BALANCE_ROWS:
        balance_results = [
            CheckResult("font_balance", True, "expect_column_values_to_be_between", TOO_FEW_ROWS),
            CheckResult("difficulty_balance", True, "expect_column_values_to_be_between", TOO_FEW_ROWS),
        ]
    elif n_fonts == 0:
        balance_results = [
            CheckResult("font_balance", False, "expect_column_values_to_be_between", "no train rows"),
            *run_suite(gx, context, BALANCE_SUITE, balance_checks(gxe, 1)[1:], balance),
        ]
    elif balance.loc[balance["kind"] == "font", "rows"].sum() < MIN_ROWS_PER_FONT * n_fonts:
        too_few = f"{TOO_FEW_ROWS} per font (fewer than {MIN_ROWS_PER_FONT} train-font rows per font)"
        balance_results = [
            CheckResult("font_balance", True, "expect_column_values_to_be_between", too_few),
            *run_suite(gx, context, BALANCE_SUITE, balance_checks(gxe, n_fonts)[1:], balance),
        ]
    else:
        balance_results = run_suite(gx, context, BALANCE_SUITE, balance_checks(gxe, n_fonts), balance)
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


def _stats(df: Any, balance: Any, rules: Rules, card: dict) -> dict:
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
