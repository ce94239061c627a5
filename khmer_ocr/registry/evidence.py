"""What an evaluation leaves on a tracked run (the report artifact, eval_* metrics, gate tags), and the
evidence a promotion decides on: read back from the run and cross-checked, never from a version's tags."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from khmer_ocr.errors import PromotionRefused
from khmer_ocr.evaluation.pages import HEADLINE
from khmer_ocr.mlflow_client import client as mlflow_client
from khmer_ocr.model_store import safe_name
from khmer_ocr.registry.versions import PENDING, VersionInfo, denied

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from khmer_ocr.evaluation.report import EvaluationReport

EVALUATION_ARTIFACT = "evaluation/evaluation.json"
LINE_FINDER_TAG = "line_finder_version"  # run and version tag: the page reader a model serves with


def log_evaluation(run_id: str, report: EvaluationReport, tracking_uri: str | None = None) -> None:
    """Attach an evaluation report to a run: the JSON artifact, per-split metrics and gate tags."""
    from mlflow.entities import Metric, RunTag

    client = mlflow_client(tracking_uri)
    now = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [
        Metric(f"eval_{split}_{key}", float(m[key]), now, 0)
        for split, m in report.splits.items()
        for key in ("char_accuracy", "sequence_accuracy", "cer", "cluster_cer")
        if isinstance(m.get(key), int | float)
    ]
    metrics += [
        Metric(f"eval_latency_{k}", float(v), now, 0)
        for k, v in report.latency.items()
        if isinstance(v, int | float) and k.startswith("ms_")
    ]
    tags = [
        RunTag("gates_passed", str(report.passed).lower()),
        RunTag("gate_set", report.gate_set),
        RunTag("eval_dataset", report.dataset),
        RunTag("eval_dataset_version", report.dataset_version or ""),
        RunTag(LINE_FINDER_TAG, report.line_finder_version),
    ]
    if (pages := report.page_report) is not None:  # page reading, next to the line metrics (not gated)
        metrics += [Metric(f"eval_{k}", v, now, 0) for k, v in pages.metrics().items()]
        tags += [
            RunTag("page_eval_dataset", pages.dataset),
            RunTag("page_eval_dataset_version", pages.dataset_version or ""),
        ]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    with tempfile.TemporaryDirectory() as tmp:
        report.write(Path(tmp) / Path(EVALUATION_ARTIFACT).name)
        client.log_artifacts(run_id, tmp, str(Path(EVALUATION_ARTIFACT).parent))


def run_evaluation(run_id: str, tracking_uri: str | None = None) -> EvaluationReport | None:
    """The evaluation report attached to a run by log_evaluation, or None."""
    from mlflow.exceptions import MlflowException

    from khmer_ocr.evaluation.report import EvaluationReport

    client = mlflow_client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, EVALUATION_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return EvaluationReport.read(path)


def version_tags(run, report: EvaluationReport) -> dict[str, str]:
    from khmer_ocr.version import __version__

    primary = report.splits[report.primary_split]
    tags = {
        "gates_passed": str(report.passed).lower(),
        "gate_set": report.gate_set,
        "eval_dataset": report.dataset,
        "eval_dataset_version": report.dataset_version or "",
        "eval_split": report.primary_split,
        "dataset_version": run.data.tags.get("dataset_version", ""),
        "config": run.data.tags.get("config", ""),
        "phase": run.data.tags.get("phase", ""),
        "code_version": run.data.tags.get("khmer_ocr_version", __version__),
        "approval": PENDING,
        LINE_FINDER_TAG: report.line_finder_version,
    }
    if (pages := report.page_report) is not None:
        tags["page_eval_dataset_version"] = pages.dataset_version or ""
        for key, value in pages.metrics().items():
            if key in HEADLINE:
                tags[f"metric.{key}"] = f"{value:.6f}"
    for key in ("char_accuracy", "sequence_accuracy", "cer", "cluster_cer"):
        if isinstance(primary.get(key), int | float):
            tags[f"metric.{key}"] = f"{primary[key]:.6f}"
    if isinstance(report.latency.get("ms_p50"), int | float):
        tags["metric.latency_ms_p50"] = f"{report.latency['ms_p50']:.3f}"
    for gate in report.gates:
        value = gate["value"]
        shown = "missing" if value is None else f"{value:.6g}"
        tags[f"gate.{gate['name']}"] = f"{'PASS' if gate['passed'] else 'FAIL'} {shown} {gate['op']} " + (
            f"{gate['threshold']:g}"
        )
    return tags


@dataclass(frozen=True)
class Evidence:
    """What the evaluation logged to a version's source run: the facts a promotion decision uses."""

    run_id: str
    report: EvaluationReport
    gates_passed: bool
    failed_gates: list[str]

    @property
    def char_accuracy(self) -> float:
        return float(self.report.splits[self.report.primary_split]["char_accuracy"])

    @property
    def dataset_version(self) -> str:
        return self.report.dataset_version or ""


_SAME = 1e-9  # a metric logged to the run and the report's value: the same float, give or take rounding


def evidence(client: MlflowClient, info: VersionInfo) -> Evidence:
    """The version's gate results and metrics from its source run's evaluation, cross-checked; raises
    PromotionRefused when there is none or its parts disagree (an edited artifact, metric or tag)."""
    from mlflow.exceptions import MlflowException

    from khmer_ocr.evaluation.gates import Gate, GateConfig, evaluate_gates
    from khmer_ocr.evaluation.report import gate_metrics

    v = f"version {info.version}"
    mv = client.get_model_version(info.name, info.version)
    run_id = mv.run_id or ""
    if not run_id:
        raise PromotionRefused(f"{v} has no source run: nothing records how it was evaluated")
    source = mv.source or ""
    if source.startswith("models:/m-"):  # the logged model must come from that same run
        try:
            logged = client.get_logged_model(source.removeprefix("models:/"))
        except MlflowException as exc:
            raise PromotionRefused(f"{v}: its model {source} cannot be read: {exc.message}") from exc
        if logged.source_run_id != run_id:
            raise PromotionRefused(
                f"{v}: its model {source} was logged by run {logged.source_run_id}, not by its run {run_id}"
            )
    elif source.startswith("runs:/") and not source.startswith(f"runs:/{run_id}/"):
        raise PromotionRefused(f"{v}: its source {source} is not its run {run_id}")
    report = run_evaluation(run_id, client.tracking_uri)
    if report is None:
        raise PromotionRefused(
            f"{v}: its run {run_id} holds no evaluation report ({EVALUATION_ARTIFACT}): register it with "
            "--data to evaluate it"
        )
    try:
        split = report.splits[report.primary_split]
        ours = float(split["char_accuracy"])
        recomputed = evaluate_gates(
            gate_metrics(split, report.latency or {}),
            GateConfig([Gate(g["name"], g["metric"], g["op"], float(g["threshold"])) for g in report.gates]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PromotionRefused(f"{v}: the evaluation report of run {run_id} is malformed: {exc}") from exc
    passed = bool(recomputed) and all(g.passed for g in recomputed)
    problems = []
    for logged_gate, gate in zip(report.gates, recomputed, strict=True):
        if bool(logged_gate.get("passed")) != gate.passed:
            said = logged_gate.get("passed")
            problems.append(f"gate {gate.name} says {said}, its values say {gate.passed}")
    if bool(report.passed) != passed:
        problems.append(f"the report says passed={report.passed}, its gates say {passed}")
    run = client.get_run(run_id)
    key = f"eval_{report.primary_split}_char_accuracy"
    metric = run.data.metrics.get(key)
    if metric is None or abs(float(metric) - ours) > _SAME:
        problems.append(f"run metric {key} is {metric}, the report says {ours}")
    if run.data.tags.get("gates_passed") != str(passed).lower():
        tag = run.data.tags.get("gates_passed")
        problems.append(f"run tag gates_passed is {tag!r}, the gates say {passed}")
    if problems:
        raise PromotionRefused(
            f"{v}: the evaluation logged to run {run_id} is inconsistent (edited?): " + "; ".join(problems)
        )
    failed = [f"gate.{g.name}" for g in recomputed if not g.passed]
    return Evidence(run_id, report, passed, failed)


def _comparison_key(dataset_version: str, split: str) -> str:
    return f"compare_{safe_name(dataset_version)}_{safe_name(split)}_char_accuracy"


def champion_score(client: MlflowClient, champion: VersionInfo, ours: Evidence) -> tuple[float, str]:
    """The champion's character accuracy on the evaluation data of ours, from its run (its own evaluation
    or an earlier comparison logged there), else evaluated now and logged to its run."""
    split, dataset_version = ours.report.primary_split, ours.dataset_version
    try:
        theirs: Evidence | None = evidence(client, champion)
    except PromotionRefused:  # no usable evaluation on its run: evaluate it now
        theirs = None
    if (
        theirs is not None
        and dataset_version
        and theirs.dataset_version == dataset_version
        and theirs.report.primary_split == split
    ):
        return theirs.char_accuracy, "its registered evaluation"
    key = _comparison_key(dataset_version, split)
    cached = client.get_run(theirs.run_id).data.metrics.get(key) if theirs and dataset_version else None
    if cached is not None:
        return float(cached), "an earlier comparison"
    data = ours.report.dataset
    if not data:
        raise PromotionRefused("the candidate's evaluation records no dataset to compare on")
    try:
        from khmer_ocr.evaluation.evaluate import evaluate

        gates = ours.report.gate_set or "milestones"
        report = evaluate(champion.uri, data, gates=gates, tracking_uri=client.tracking_uri)
    except (OSError, ValueError) as exc:
        raise PromotionRefused(
            f"cannot evaluate champion v{champion.version} on {data} to compare: {exc}"
        ) from exc
    if split not in report.splits:
        raise PromotionRefused(f"champion v{champion.version} has no {split!r} lines to compare on in {data}")
    score = float(report.splits[split]["char_accuracy"])
    if theirs is not None and dataset_version:  # a cache for the next comparison: this account may not write
        from mlflow.exceptions import MlflowException

        try:
            client.log_metric(theirs.run_id, key, score)
            client.set_model_version_tag(
                champion.name,
                champion.version,
                f"compare.{safe_name(dataset_version)}.char_accuracy",
                f"{score:.6f}",
            )  # for display only
        except MlflowException as exc:
            if not denied(exc):
                raise
    return score, f"evaluated now on {data}"
