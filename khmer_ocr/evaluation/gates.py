"""Release gates: named thresholds on metrics (the founding plan's milestones), loaded from YAML."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from khmer_ocr.config import ConfigError, load_config, profile_path

OPS = (">=", "<=")
# Absorbs float rounding only (e.g. 1 - 0.3 != 0.7): far below one character in any real evaluation set.
TOLERANCE = 1e-12


@dataclass
class Gate:
    """Passes when `metric op threshold` holds, e.g. char_accuracy >= 0.85."""

    name: str
    metric: str
    op: str
    threshold: float
    description: str = ""

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ConfigError(f"gate {self.name!r}: op must be one of {list(OPS)}, got {self.op!r}")
        if not math.isfinite(self.threshold):
            raise ConfigError(f"gate {self.name!r}: threshold must be finite, got {self.threshold!r}")


@dataclass
class GateConfig:
    gates: list[Gate] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [g.name for g in self.gates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"duplicate gate name(s): {dupes}")


@dataclass(frozen=True)
class GateResult:
    name: str
    metric: str
    op: str
    threshold: float
    value: float | None
    passed: bool
    reason: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_gates(name_or_path: str | Path = "milestones") -> GateConfig:
    """A packaged gate profile by name (khmer_ocr/configs/gates/<name>.yaml) or a YAML file by path."""
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text
    return load_config(GateConfig, name_or_path if is_path else profile_path("gates", text))


def evaluate_gates(metrics: dict[str, float | None], gates: GateConfig) -> list[GateResult]:
    """Check every gate against metrics; a metric that is missing (or None / NaN) fails its gate."""
    results = []
    for g in gates.gates:
        raw = metrics.get(g.metric)
        value = None if raw is None else float(raw)
        if value is None:
            passed, reason = False, f"metric {g.metric!r} missing"
        elif math.isnan(value):
            passed, reason = False, f"metric {g.metric!r} is NaN"
        else:
            passed = value >= g.threshold - TOLERANCE if g.op == ">=" else value <= g.threshold + TOLERANCE
            reason = ""
        results.append(GateResult(g.name, g.metric, g.op, g.threshold, value, passed, reason, g.description))
    return results


def all_passed(results: list[GateResult] | list[dict[str, Any]]) -> bool:
    """True when there is at least one result and every one passed (no gates checked is not a pass)."""
    return bool(results) and all(r["passed"] if isinstance(r, dict) else r.passed for r in results)


def format_gate(result: GateResult | dict[str, Any]) -> str:
    """One line: 'PASS name: value op threshold' (or 'FAIL ...: missing (reason)')."""
    r = result.to_dict() if isinstance(result, GateResult) else result
    status = "PASS" if r["passed"] else "FAIL"
    value = r["value"]
    shown = f"{value:.4f}" if value is not None and not math.isnan(value) else "missing"
    line = f"{status} {r['name']}: {shown} {r['op']} {r['threshold']:g}"
    return f"{line} ({r['reason']})" if r.get("reason") else line
