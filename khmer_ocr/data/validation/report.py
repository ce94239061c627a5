"""The validation report: one CheckResult per check, ValidationReport, and validation.json / validation.html
(written beside the dataset, or where asked)."""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from khmer_ocr import storage

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
