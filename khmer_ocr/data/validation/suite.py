"""The expectation suites (Great Expectations): the checks on the rows, the balance and the dataset's files,
run each on its frame with an ephemeral GX context; every expectation's result becomes one CheckResult whose
details name a few offending ids or values."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from khmer_ocr.data.format import SPLITS
from khmer_ocr.data.validation.frames import isnull
from khmer_ocr.data.validation.report import CheckResult
from khmer_ocr.data.validation.rules import (
    BALANCE_HIGH,
    BALANCE_LOW,
    MIN_WIDTH,
    PAGE_SIDES,
    Rules,
)

SHOWN = 5  # offending ids / values named in a failure's details
SUITE, BALANCE_SUITE, FILES_SUITE = (
    "khmer_ocr.dataset",
    "khmer_ocr.dataset.balance",
    "khmer_ocr.dataset.files",
)


def _short(text: Any, limit: int = 24) -> str:
    s = str(text)
    return repr(s if len(s) <= limit else s[: limit - 1] + "…")


@dataclass
class Check:
    name: str
    expectation: Any  # a GX expectation instance
    describe: Callable[[Any], str]  # row (a pandas Series) -> what to show of an offending row
    noun: str = "rows"  # what the checked frame's rows are
    rule: str = ""  # what every row must satisfy, said once in a failure's details


def row_checks(gxe: Any, rules: Rules) -> list[Check]:
    pattern = rules.charset.pattern
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"  # "$" would also accept a trailing newline
    pages = rules.kind == "pages"
    if pages:  # lines of charset characters joined by single newlines
        cls = pattern[1 : -len(r"+\Z")]
        pattern = f"^{cls}+(?:\n{cls}+)*\\Z"
    charset = rules.charset

    def c(name: str, expectation: Any, describe: Callable[[Any], str]) -> Check:
        expectation.meta = {"check": name}
        return Check(name, expectation, describe)

    def rid(r: Any) -> str:
        return str(r["id"])

    def missing(r: Any) -> str:
        return f"{rid(r)} (no {', '.join(k for k in rules.fields if isnull(r[k]))})"

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


def balance_checks(gxe: Any, n_fonts: int) -> list[Check]:
    lo, hi = BALANCE_LOW / n_fonts, BALANCE_HIGH / n_fonts
    font = gxe.ExpectColumnValuesToBeBetween(column="font_share", min_value=lo, max_value=hi)
    font.meta = {"check": "font_balance"}
    level = gxe.ExpectColumnValuesToBeBetween(
        column="difficulty_ratio", min_value=BALANCE_LOW, max_value=BALANCE_HIGH
    )
    level.meta = {"check": "difficulty_balance"}
    return [
        Check(
            "font_balance",
            font,
            lambda r: f"{r['value']} {r['share']:.3f}",
            "train fonts",
            f"share of train rows {lo:.3f}..{hi:.3f}",
        ),
        Check(
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


def files_checks(gxe: Any) -> list[Check]:
    expectation = gxe.ExpectColumnValuesToBeInSet(column="ok", value_set=[True])
    expectation.meta = {"check": "charset_consistent"}
    return [
        Check(
            "charset_consistent",
            expectation,
            lambda r: f"{r['id']}: {r['problem']}",
            "dataset files",
        )
    ]


_GX_READY = False


def gx_modules():
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


def run_suite(gx: Any, context: Any, name: str, checks: list[Check], frame: Any) -> list[CheckResult]:
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


def _details(r: Any, check: Check, frame: Any) -> str:
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
