"""Evaluation: metrics defined once (CER / accuracy over NFC code points), milestone gates, reports."""

from khmer_ocr.evaluation.gates import (
    Gate,
    GateConfig,
    GateResult,
    all_passed,
    evaluate_gates,
    format_gate,
    load_gates,
)
from khmer_ocr.evaluation.metrics import (
    LatencyStats,
    TextMetrics,
    align,
    edit_distance,
    error_analysis,
    measure_latency,
    nfc,
    score,
    score_by_level,
)
from khmer_ocr.evaluation.report import EvaluationReport, build_report, gate_metrics

__all__ = [
    "EvaluationReport",
    "Gate",
    "GateConfig",
    "GateResult",
    "LatencyStats",
    "TextMetrics",
    "align",
    "all_passed",
    "build_report",
    "edit_distance",
    "error_analysis",
    "evaluate_gates",
    "format_gate",
    "gate_metrics",
    "load_gates",
    "measure_latency",
    "nfc",
    "score",
    "score_by_level",
]
