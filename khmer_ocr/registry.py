"""The MLflow model registry: download a registered model, and the release workflow around it.

Workflow (aliases and model-version tags only; MLflow's stages are deprecated and never used):
  register(run_id)   a new version of the registered model `khmer-ocr` from a tracked run's logged model,
                     tagged with its gate results, key metrics, dataset/config/code versions and
                     approval=pending; a version that passes its gates gets the alias `candidate`.
  approve / reject   a person's decision, as the tags approval=approved|rejected, approved_by /
                     rejected_by, ..._at and rejection_reason (the same tags can be set in the MLflow UI).
  promote(version)   moves `champion` to an approved version that passes its gates and is at least as good
                     as the current champion on the same evaluation data; the old champion keeps `previous`.
  rollback()         moves `champion` back to `previous`.
Every change is recorded as tags on the version (<action>_by, <action>_at, <action>_reason) and as an
event tag on the registered model (event.<UTC time>.<action>.v<version>: JSON who/when/why).

References for download_model: `models:/<name>@<alias>`, `models:/<name>/<version>`,
`models:/m-<logged model id>` and `runs:/<run_id>/<path>` (e.g. runs:/<run_id>/model). The tracking/registry
URI is the argument, else MLFLOW_TRACKING_URI, else the same local default as khmer_ocr.tracking. Downloads
are cached under <cache>/models/<name>-v<version> (an alias is resolved to its version first, so moving an
alias is seen).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from khmer_ocr.data.sources import cache_dir
from khmer_ocr.errors import ModelLoadError, PromotionRefused, RegistryError
from khmer_ocr.model_folder import WEIGHTS

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from khmer_ocr.evaluation.report import EvaluationReport

MODEL_NAME = "khmer-ocr"
CANDIDATE, CHAMPION, PREVIOUS = "candidate", "champion", "previous"
APPROVED, REJECTED, PENDING = "approved", "rejected", "pending"
EVALUATION_ARTIFACT = "evaluation/evaluation.json"
CHAMPION_HISTORY = "champion_history"  # registered-model tag: JSON list of champion versions, oldest first

_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?$")
_RUNS = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+)$")


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._")[:200] or "model"


def _find_model_dir(root: Path) -> Path | None:
    """The folder holding model.safetensors under root (the logged pyfunc's `model_dir` artifact)."""
    if not root.is_dir():
        return None
    hits = sorted(root.rglob(WEIGHTS), key=lambda p: len(p.parts))
    return hits[0].parent if hits else None


def _resolve(client, ref: str) -> tuple[str, str]:
    """(an immutable artifact URI, a cache key) for ref; MlflowException when it does not exist."""
    if m := _RUNS.match(ref):
        client.get_run(m["run_id"])
        return ref, f"run-{m['run_id']}-{m['path']}"
    m = _MODELS.match(ref)
    if not m:
        raise ModelLoadError(
            f"unsupported model reference {ref!r}: use models:/<name>@<alias>, models:/<name>/<version>, "
            "models:/m-<id> or runs:/<run_id>/<path>"
        )
    name = m["name"]
    if m["alias"]:
        version = client.get_model_version_by_alias(name, m["alias"]).version
    elif m["version"]:
        version = client.get_model_version(name, m["version"]).version
    elif name.startswith("m-"):  # a logged model (MLflow 3), immutable
        client.get_logged_model(name)
        return ref, f"logged-{name}"
    else:
        raise ModelLoadError(
            f"{ref!r} names no version or alias: use models:/{name}@<alias> (stages are gone)"
        )
    return f"models:/{name}/{version}", f"{name}-v{version}"


def registry_version(ref: str) -> str | None:
    """The model version number a models:/<name>@<alias> or models:/<name>/<version> reference names
    now; None for other references."""
    m = _MODELS.match(ref)
    if not m or not (m["alias"] or m["version"]):
        return None
    try:
        return _resolve(_client(None), ref)[1].rsplit("-v", 1)[1]
    except Exception as exc:  # MlflowException or a connection error
        raise ModelLoadError(f"cannot resolve {ref}: {exc}") from exc


def download_model(ref: str) -> Path:
    """The local model folder for a registry or run reference (downloaded once, then cached).

    Raises ModelLoadError naming ref when the model, version, alias or run does not exist, the registry
    cannot be reached, or the artifacts hold no model folder.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from khmer_ocr.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri()
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        uri, key = _resolve(client, ref)
    except MlflowException as exc:
        raise ModelLoadError(
            f"model {ref} not found in the registry at {tracking_uri}: {exc.message}"
        ) from exc
    except OSError as exc:  # requests' connection errors are OSErrors
        raise ModelLoadError(f"cannot reach the registry at {tracking_uri} for {ref}: {exc}") from exc
    dest = cache_dir() / "models" / _safe(key)
    if (found := _find_model_dir(dest)) is not None:
        return found
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(tmp), tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
        if _find_model_dir(tmp) is None:
            raise ModelLoadError(f"{ref} ({uri}) holds no model folder ({WEIGHTS} not found)")
        try:
            tmp.rename(dest)
        except OSError:  # another process cached it first
            if _find_model_dir(dest) is None:
                raise
    except MlflowException as exc:
        raise ModelLoadError(f"cannot download model {ref} ({uri}): {exc.message}") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot download model {ref} ({uri}): {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = _find_model_dir(dest)
    assert found is not None
    return found


# ------------------------------------------------------------------------------------------- the workflow
@dataclass
class VersionInfo:
    """One registered model version as the workflow sees it."""

    name: str
    version: str
    run_id: str
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def gates_passed(self) -> bool:
        return self.tags.get("gates_passed") == "true"

    @property
    def approval(self) -> str:
        return self.tags.get("approval", PENDING)

    def metric(self, key: str) -> float | None:
        value = self.tags.get(f"metric.{key}")
        return float(value) if value not in (None, "") else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "run_id": self.run_id,
            "uri": self.uri,
            "aliases": self.aliases,
            "approval": self.approval,
            "gates_passed": self.gates_passed,
            "tags": self.tags,
        }


def _client(tracking_uri: str | None) -> MlflowClient:
    from mlflow import MlflowClient

    from khmer_ocr.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    return MlflowClient(uri, registry_uri=uri)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _info(client: MlflowClient, name: str, version: str | int) -> VersionInfo:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
        by_alias = client.get_registered_model(name).aliases or {}
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # the server failed or cannot be reached: worth a retry, unlike a missing version
        raise RegistryError(f"model {name} version {version} not found: {exc.message}") from exc
    return _version_info(name, mv, by_alias)


def _version_info(name: str, mv, by_alias: dict) -> VersionInfo:
    """A VersionInfo from MLflow's ModelVersion and the registered model's {alias: version}."""
    aliases = sorted(a for a, v in by_alias.items() if str(v) == str(mv.version))
    return VersionInfo(name, str(mv.version), mv.run_id or "", aliases, dict(mv.tags or {}))


def get_version(
    alias_or_version: str | int, *, name: str = MODEL_NAME, tracking_uri: str | None = None
) -> VersionInfo | None:
    """The version an alias points to (None when the alias is not set), or a version by number."""
    client = _client(tracking_uri)
    key = str(alias_or_version)
    if key.isdigit():
        return _info(client, name, key)
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, key)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None  # no such model or alias
        raise
    return _info(client, name, mv.version)


def list_versions(*, name: str = MODEL_NAME, tracking_uri: str | None = None) -> list[VersionInfo]:
    """Every version of the registered model, newest first (empty when it does not exist yet)."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        by_alias = client.get_registered_model(name).aliases or {}
    except MlflowException:
        return []
    versions = client.search_model_versions(f"name = '{name}'")
    return [_version_info(name, mv, by_alias) for mv in sorted(versions, key=lambda mv: -int(mv.version))]


def _record(
    client: MlflowClient, name: str, version: str, action: str, by: str, reason: str = "", **extra: str
) -> None:
    """Write who/when/why of an action as version tags and as an event on the registered model."""
    if not by or not by.strip():
        raise RegistryError(f"{action}: say who is acting (by=NAME)")
    when = _now()
    tags = {f"{action}_by": by, f"{action}_at": when, **extra}
    if reason:
        tags[f"{action}_reason"] = reason
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))
    event = {"action": action, "version": version, "by": by, "at": when, "reason": reason, **extra}
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    client.set_registered_model_tag(name, f"event.{stamp}.{action}.v{version}", json.dumps(event))


def log_evaluation(run_id: str, report: EvaluationReport, tracking_uri: str | None = None) -> None:
    """Attach an evaluation report to a run: the JSON artifact, per-split metrics and gate tags."""
    from mlflow.entities import Metric, RunTag

    client = _client(tracking_uri)
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
    ]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    with tempfile.TemporaryDirectory() as tmp:
        report.write(Path(tmp) / Path(EVALUATION_ARTIFACT).name)
        client.log_artifacts(run_id, tmp, str(Path(EVALUATION_ARTIFACT).parent))


def run_evaluation(run_id: str, tracking_uri: str | None = None) -> EvaluationReport | None:
    """The evaluation report attached to a run by log_evaluation, or None."""
    from mlflow.exceptions import MlflowException

    from khmer_ocr.evaluation.report import EvaluationReport

    client = _client(tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, EVALUATION_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return EvaluationReport.read(path)


def _version_tags(run, report: EvaluationReport) -> dict[str, str]:
    from khmer_ocr import __version__

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
    }
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


def register(
    run_id: str,
    *,
    data: str | None = None,
    gates: str = "milestones",
    by: str = "khmer-ocr",
    name: str = MODEL_NAME,
    tracking_uri: str | None = None,
) -> VersionInfo:
    """Register a tracked run's model as a new version; alias `candidate` when it passes its gates.

    With data, the run's model is evaluated on it now (gate set `gates`) and the report is attached to the
    run; without, the report an earlier log_evaluation attached is used.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise RegistryError(f"run {run_id} not found at {client.tracking_uri}: {exc.message}") from exc
    model_uri = run.data.tags.get("model_uri")
    if not model_uri:
        raise RegistryError(f"run {run_id} logged no model (no model_uri tag): was the training finished?")
    if data is not None:
        from khmer_ocr.evaluation.evaluate import evaluate

        report = evaluate(f"runs:/{run_id}/model", data, gates=gates)
        log_evaluation(run_id, report, tracking_uri)
    elif (report := run_evaluation(run_id, tracking_uri)) is None:
        raise RegistryError(
            f"run {run_id} has no evaluation: give the dataset to evaluate it on (--data DATASET)"
        )
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Khmer text-line recognizer. Aliases: candidate, champion, previous."
        )
    import mlflow

    from khmer_ocr.tracking import fluent_tracking_uri

    tags = _version_tags(run, report)
    with fluent_tracking_uri(client.tracking_uri):
        mv = mlflow.register_model(model_uri, name, tags=tags)
    version = str(mv.version)
    _record(client, name, version, "registered", by, f"run {run_id}", run_id=run_id)
    if report.passed:
        client.set_registered_model_alias(name, CANDIDATE, version)
        _record(client, name, version, "candidate", by, "passes its gates")
    return _info(client, name, version)


def approve(
    version: str | int, by: str, reason: str = "", *, name: str = MODEL_NAME, tracking_uri: str | None = None
) -> VersionInfo:
    """A person approves a version for promotion (tags approval=approved, approved_by, approved_at)."""
    client = _client(tracking_uri)
    info = _info(client, name, version)
    client.set_model_version_tag(name, info.version, "approval", APPROVED)
    _record(client, name, info.version, "approved", by, reason)
    return _info(client, name, info.version)


def reject(
    version: str | int, by: str, reason: str, *, name: str = MODEL_NAME, tracking_uri: str | None = None
) -> VersionInfo:
    """A person rejects a version (tags approval=rejected, rejected_by, rejected_reason); it loses
    `candidate`."""
    if not reason.strip():
        raise RegistryError("reject: give a reason")
    client = _client(tracking_uri)
    info = _info(client, name, version)
    if CHAMPION in info.aliases:
        raise RegistryError(f"version {info.version} is the champion: roll back or promote another first")
    client.set_model_version_tag(name, info.version, "approval", REJECTED)
    _record(client, name, info.version, "rejected", by, reason)
    if CANDIDATE in info.aliases:
        client.delete_registered_model_alias(name, CANDIDATE)
    return _info(client, name, info.version)


def approval_status(version: str | int, *, name: str = MODEL_NAME, tracking_uri: str | None = None) -> str:
    """approved / rejected / pending, from the version's tags (an approval needs approved_by)."""
    info = _info(_client(tracking_uri), name, version)
    if info.approval == APPROVED and not info.tags.get("approved_by"):
        return PENDING  # a bare tag is not an approval: say who approved
    return info.approval if info.approval in (APPROVED, REJECTED) else PENDING


def _history(client: MlflowClient, name: str) -> list[str]:
    raw = (client.get_registered_model(name).tags or {}).get(CHAMPION_HISTORY, "[]")
    try:
        return [str(v) for v in json.loads(raw)]
    except ValueError:
        return []


def _champion_score(client: MlflowClient, champion: VersionInfo, info: VersionInfo) -> tuple[float, str]:
    """The champion's character accuracy on the evaluation data of info, evaluating it if needed."""
    dataset_version = info.tags.get("eval_dataset_version", "")
    key = f"metric@{dataset_version}.char_accuracy"
    if dataset_version and champion.tags.get("eval_dataset_version") == dataset_version:
        score = champion.metric("char_accuracy")
        if score is not None:
            return score, "its registered evaluation"
    if dataset_version and champion.tags.get(key):
        return float(champion.tags[key]), "an earlier comparison"
    data = info.tags.get("eval_dataset")
    if not data:
        raise PromotionRefused(f"version {info.version} records no evaluation dataset to compare on")
    from khmer_ocr.evaluation.evaluate import evaluate

    try:
        report = evaluate(champion.uri, data, gates=info.tags.get("gate_set") or "milestones")
    except (OSError, ValueError) as exc:
        raise PromotionRefused(
            f"cannot evaluate champion v{champion.version} on {data} to compare: {exc}"
        ) from exc
    score = float(report.splits[report.primary_split]["char_accuracy"])
    if dataset_version:
        client.set_model_version_tag(champion.name, champion.version, key, f"{score:.6f}")
    return score, f"evaluated now on {data}"


def promote(
    version: str | int,
    by: str,
    reason: str = "",
    *,
    name: str = MODEL_NAME,
    tracking_uri: str | None = None,
) -> VersionInfo:
    """Move `champion` to version; the old champion keeps `previous`. Raises PromotionRefused with the
    reason unless the version is approved, passes its gates and is at least as good as the champion."""
    client = _client(tracking_uri)
    info = _info(client, name, version)
    status = approval_status(info.version, name=name, tracking_uri=tracking_uri)
    if status != APPROVED:
        raise PromotionRefused(
            f"version {info.version} is {status}, not approved: approve it in the MLflow UI (tags "
            f"approval=approved and approved_by=<you>) or run `khmer-ocr approve {info.version} --by NAME`"
        )
    if not info.gates_passed:
        failed = sorted(k for k, v in info.tags.items() if k.startswith("gate.") and v.startswith("FAIL"))
        raise PromotionRefused(f"version {info.version} fails its gates: {', '.join(failed) or 'unknown'}")
    champion = get_version(CHAMPION, name=name, tracking_uri=tracking_uri)
    if champion is not None and champion.version == info.version:
        raise PromotionRefused(f"version {info.version} is already the champion")
    note = "first champion"
    if champion is not None:
        theirs, how = _champion_score(client, champion, info)
        ours = info.metric("char_accuracy") or 0.0
        if ours < theirs:
            raise PromotionRefused(
                f"version {info.version} reads {ours:.2%} of characters, champion v{champion.version} "
                f"{theirs:.2%} on the same data ({how}): not promoted"
            )
        note = f"{ours:.2%} vs champion v{champion.version} {theirs:.2%} ({how})"
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        _record(client, name, champion.version, "superseded", by, reason, superseded_by=info.version)
    client.set_registered_model_alias(name, CHAMPION, info.version)
    history = [v for v in _history(client, name) if v != info.version] + [info.version]
    client.set_registered_model_tag(name, CHAMPION_HISTORY, json.dumps(history))
    if CANDIDATE in info.aliases:
        client.delete_registered_model_alias(name, CANDIDATE)
    _record(client, name, info.version, "promoted", by, reason or note, comparison=note)
    return _info(client, name, info.version)


def rollback(
    by: str, reason: str = "", *, name: str = MODEL_NAME, tracking_uri: str | None = None
) -> VersionInfo:
    """Move `champion` back to `previous` (and `previous` one further back, if there is one)."""
    client = _client(tracking_uri)
    previous = get_version(PREVIOUS, name=name, tracking_uri=tracking_uri)
    champion = get_version(CHAMPION, name=name, tracking_uri=tracking_uri)
    if previous is None or champion is None:
        raise RegistryError(f"model {name} has no previous champion to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    history = [v for v in _history(client, name) if v != champion.version]
    client.set_registered_model_tag(name, CHAMPION_HISTORY, json.dumps(history))
    earlier = [v for v in history if v != previous.version]
    if earlier:
        client.set_registered_model_alias(name, PREVIOUS, earlier[-1])
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    _record(client, name, champion.version, "rolled_back", by, reason, replaced_by=previous.version)
    _record(client, name, previous.version, "restored", by, reason, replacing=champion.version)
    return _info(client, name, previous.version)
