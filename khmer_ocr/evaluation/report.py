"""The evaluation report: per-split and per-difficulty-level metrics, latency, gates and error analysis, as
JSON and as a summary."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from khmer_ocr.evaluation.gates import GateConfig, all_passed, evaluate_gates, format_gate
from khmer_ocr.evaluation.json_report import JsonReport
from khmer_ocr.evaluation.metrics import error_analysis, score, score_by_level
from khmer_ocr.evaluation.pages import PageReport
from khmer_ocr.version import LINE_FINDER_VERSION


@dataclass
class EvaluationReport(JsonReport):
    model: str
    dataset: str
    dataset_version: str | None
    splits: dict[str, dict[str, Any]]  # split name -> TextMetrics.to_dict()
    latency: dict[str, Any]  # measure_latency() output: ms_p50, ms_p95, ms_mean, n_calls
    gates: list[dict[str, Any]]  # GateResult.to_dict(), evaluated on primary_split
    error_analysis: dict[str, Any]  # metrics.error_analysis() of primary_split
    passed: bool
    primary_split: str = "test"
    gate_set: str = "milestones"  # the gate profile name or YAML path the gates came from
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    # split name -> difficulty level ("1".."5") -> TextMetrics.to_dict() of that level's lines; empty in
    # reports written before levels were scored (from_dict reads those unchanged)
    levels: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # PageReport.to_dict() of the pages read beside the lines (evaluate(..., page_data=...)), else empty;
    # shown and logged next to the line metrics, never gated
    pages: dict[str, Any] = field(default_factory=dict)
    decoding: str = "best path"  # Recognizer.decoding_name: best path, or beam search with a language model

    @property
    def page_report(self) -> PageReport | None:
        return PageReport.from_dict(self.pages) if self.pages else None

    @property
    def line_finder_version(self) -> str:
        """The line finder the model reads pages with: the one its page evaluation ran, else this code's."""
        pages = self.page_report
        return pages.line_finder_version if pages is not None else LINE_FINDER_VERSION

    @classmethod
    def read(cls, path: str | Path) -> EvaluationReport:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def summary(self, top_confusions: int = 5) -> str:
        version = f"@{self.dataset_version}" if self.dataset_version else ""
        lines = [
            f"model {self.model} on {self.dataset}{version} (gates {self.gate_set!r} on split "
            f"{self.primary_split!r}, "
            f"{self.created_at}); decoding: {self.decoding}",
            f"{'split':<18}{'lines':>8}{'chars':>10}{'CER':>10}{'char acc':>10}{'seq acc':>10}"
            f"{'cluster CER':>13}",
        ]
        for name, m in self.splits.items():
            lines.append(f"{name:<18}{_metric_columns(m)}")
        if any(self.levels.values()):
            lines.append("per difficulty level (1 short and clean .. 5 long and degraded):")
            lines.append(
                f"  {'split':<16}{'level':>6}{'lines':>8}{'chars':>10}{'CER':>10}{'char acc':>10}"
                f"{'seq acc':>10}{'cluster CER':>13}"
            )
            for name, per_level in self.levels.items():
                for level, m in per_level.items():
                    lines.append(f"  {name:<16}{level:>6}{_metric_columns(m)}")
        if self.latency:
            lat = ", ".join(
                f"{k.removeprefix('ms_')} {v:.2f} ms" if k.startswith("ms_") else f"{k} {v}"
                for k, v in self.latency.items()
            )
            lines.append(f"latency: {lat}")
        confusions = self.error_analysis.get("confusions", [])[:top_confusions]
        if confusions:
            lines.append("top confusions (ref -> hyp: count):")
            for c in confusions:
                ref = f"{c['ref']!r} {c['ref_code']}" if c["ref"] else "(none)"
                hyp = f"{c['hyp']!r} {c['hyp_code']}" if c["hyp"] else "(none)"
                lines.append(f"  {ref} -> {hyp}: {c['count']}")
        if self.page_report is not None:
            lines.append(self.page_report.summary())
        lines.extend(format_gate(g) for g in self.gates)
        lines.append(f"overall: {'PASS' if self.passed else 'FAIL'}")
        return "\n".join(lines)


def _metric_columns(m: dict[str, Any]) -> str:
    return (
        f"{m['n_lines']:>8}{m['n_chars']:>10}{m['cer']:>10.2%}{m['char_accuracy']:>10.2%}"
        f"{m['sequence_accuracy']:>10.2%}{m['cluster_cer']:>13.2%}"
    )


def gate_metrics(split_metrics: dict[str, Any], latency: dict[str, Any]) -> dict[str, Any]:
    """The flat metric namespace gates refer to: a split's TextMetrics fields plus latency_<key>."""
    out = dict(split_metrics)
    for k, v in latency.items():
        out[k if k.startswith("latency_") else f"latency_{k}"] = v
    return out


def build_report(
    model: str,
    dataset: str,
    dataset_version: str | None,
    per_split: dict[str, tuple[list[str], list[str]]],
    latency: dict[str, Any],
    gates: GateConfig,
    primary_split: str = "test",
    top_k: int = 20,
    gate_set: str = "milestones",
    levels: dict[str, Sequence[Any]] | None = None,
) -> EvaluationReport:
    """Score every split (refs, hyps), analyse the primary split's errors and check the gates on it.

    levels: for some or all splits, the difficulty level of each line (in the order of its refs); those
    splits are also scored per level (`score_by_level`). Gates only ever see the whole primary split.
    """
    if primary_split not in per_split:
        raise ValueError(f"primary split {primary_split!r} not among the scored splits {sorted(per_split)}")
    splits: dict[str, dict[str, Any]] = {}
    for name, (refs, hyps) in per_split.items():
        try:
            splits[name] = score(refs, hyps).to_dict()
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"split {name!r}: {exc}") from exc
    levels = levels or {}
    unknown = sorted(set(levels) - set(per_split))
    if unknown:
        raise ValueError(f"difficulty levels given for split(s) {unknown} that are not scored")
    by_level: dict[str, dict[str, dict[str, Any]]] = {}
    for name in (n for n in per_split if n in levels):
        refs, hyps = per_split[name]
        try:
            by_level[name] = {k: m.to_dict() for k, m in score_by_level(refs, hyps, levels[name]).items()}
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"split {name!r}: {exc}") from exc
    refs, hyps = per_split[primary_split]
    results = evaluate_gates(gate_metrics(splits[primary_split], latency or {}), gates)
    return EvaluationReport(
        model=model,
        dataset=dataset,
        dataset_version=dataset_version,
        splits=splits,
        latency=dict(latency or {}),
        gates=[r.to_dict() for r in results],
        error_analysis=error_analysis(refs, hyps, top_k=top_k),
        passed=all_passed(results),
        primary_split=primary_split,
        gate_set=gate_set,
        levels=by_level,
    )
