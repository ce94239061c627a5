"""The MLflow model registry: download a registered model, and the release workflow around it.

Workflow (aliases and model-version tags only; MLflow's stages are deprecated and never used):
  register(run_id)   a new version of the registered model `khmer-ocr` from a tracked run's logged model,
                     tagged with its gate results, key metrics, dataset/config/code versions and
                     approval=pending; a version that passes its gates gets the alias `candidate`.
  approve / reject   a person's decision, as the tags approval=approved|rejected, approved_by /
                     rejected_by, ..._at and rejection_reason (the same tags can be set in the MLflow UI).
  promote(version)   moves `champion` to an approved version that passes its gates and is at least as good
                     as the current champion on the same evaluation data; the old champion keeps `previous`.
                     Gate results and metrics for that decision come from what the evaluation logged to the
                     version's source run (the evaluation report artifact, checked against the run's metrics
                     and gate tag and against the gates recomputed from the report), never from the
                     version's tags: tags are for display and can be edited by anyone who can edit the
                     registered model.
  rollback()         moves `champion` back to `previous`.
Every change is recorded as tags on the version (<action>_by, <action>_at, <action>_reason) and as an
event tag on the registered model (event.<UTC time>.<action>.v<version>: JSON who/when/why).

References for download_model: `models:/<name>@<alias>`, `models:/<name>/<version>`,
`models:/m-<logged model id>` and `runs:/<run_id>/<path>` (e.g. runs:/<run_id>/model). The tracking/registry
URI is the argument, else MLFLOW_TRACKING_URI, else the same local default as khmer_ocr.tracking. Downloads
are cached by content: under <cache>/models/<name>-v<version>-<logged model or run id> (an alias is resolved
to its version first, so moving an alias is seen; run and model ids are random per tracking server, so two
registries' "v2" never share a cache entry), and the weights' SHA-256 recorded when the model was logged
(tag model_sha256 on the run and on the logged model) is checked on every cache hit and after every
download: a mismatch is downloaded again, then refused.
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
from khmer_ocr.tracking import SHA256_TAG

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


@dataclass(frozen=True)
class _Resolved:
    uri: str  # an immutable artifact URI
    key: str  # the cache entry's name: unique per logged model (or run) of one tracking server
    version: str | None  # the registry version, for models:/<name>@<alias> and models:/<name>/<version>
    sha256: str | None  # the weights' checksum recorded when the model was logged (None: not recorded)


def _recorded_sha256(client, run_id: str | None, model_id: str | None, source: str) -> str | None:
    """The model_sha256 tag of the logged model, else of the run when its model_uri is that source."""
    from mlflow.exceptions import MlflowException

    if model_id:
        try:
            if sha := (client.get_logged_model(model_id).tags or {}).get(SHA256_TAG):
                return sha
        except MlflowException:
            pass
    if run_id:
        tags = client.get_run(run_id).data.tags
        if tags.get(SHA256_TAG) and tags.get("model_uri", source) == source:
            return tags[SHA256_TAG]
    return None


def _resolve(client, ref: str) -> _Resolved:
    """Where ref's artifacts are, and what they must hold; MlflowException when it does not exist."""
    if m := _RUNS.match(ref):
        run = client.get_run(m["run_id"])
        logged = run.data.tags.get("model_uri", "")
        model_id = logged.removeprefix("models:/") if logged.startswith("models:/m-") else None
        sha = _recorded_sha256(client, m["run_id"], model_id, logged) if m["path"] == "model" else None
        return _Resolved(ref, f"run-{m['run_id']}-{m['path']}", None, sha)
    m = _MODELS.match(ref)
    if not m:
        raise ModelLoadError(
            f"unsupported model reference {ref!r}: use models:/<name>@<alias>, models:/<name>/<version>, "
            "models:/m-<id> or runs:/<run_id>/<path>"
        )
    name = m["name"]
    if m["alias"]:
        mv = client.get_model_version_by_alias(name, m["alias"])
    elif m["version"]:
        mv = client.get_model_version(name, m["version"])
    elif name.startswith("m-"):  # a logged model (MLflow 3), immutable
        client.get_logged_model(name)  # raises when there is none
        return _Resolved(ref, f"logged-{name}", None, _recorded_sha256(client, None, name, ref))
    else:
        raise ModelLoadError(
            f"{ref!r} names no version or alias: use models:/{name}@<alias> (stages are gone)"
        )
    source = mv.source or ""
    model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
    origin = model_id or (f"run-{mv.run_id}" if mv.run_id else source)
    sha = _recorded_sha256(client, mv.run_id, model_id, source)
    key = f"{name}-v{mv.version}-{origin}"
    return _Resolved(f"models:/{name}/{mv.version}", key, str(mv.version), sha)


def registry_version(ref: str) -> str | None:
    """The model version number a models:/<name>@<alias> or models:/<name>/<version> reference names
    now; None for other references."""
    m = _MODELS.match(ref)
    if not m or not (m["alias"] or m["version"]):
        return None
    try:
        return _resolve(_client(None), ref).version
    except Exception as exc:  # MlflowException or a connection error
        raise ModelLoadError(f"cannot resolve {ref}: {exc}") from exc


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, as hex."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(root: Path, sha256: str | None) -> Path | None:
    """The model folder under root if there is one and its weights have the recorded checksum."""
    found = _find_model_dir(root)
    if found is None or (sha256 and file_sha256(found / WEIGHTS) != sha256):
        return None
    return found


def download_model(ref: str) -> Path:
    """The local model folder for a registry or run reference (downloaded once, then cached).

    Raises ModelLoadError naming ref when the model, version, alias or run does not exist, the registry
    cannot be reached, or the artifacts hold no model folder.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from khmer_ocr.tracking import fluent_tracking_uri, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri()
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        resolved = _resolve(client, ref)
    except MlflowException as exc:
        raise ModelLoadError(
            f"model {ref} not found in the registry at {tracking_uri}: {exc.message}"
        ) from exc
    except OSError as exc:  # requests' connection errors are OSErrors
        raise ModelLoadError(f"cannot reach the registry at {tracking_uri} for {ref}: {exc}") from exc
    uri, sha256 = resolved.uri, resolved.sha256
    dest = cache_dir() / "models" / _safe(resolved.key)
    if (found := _verified(dest, sha256)) is not None:
        return found
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # models:/ URIs are read through MLflow's default registry, whatever registry_uri says: set it too
        with fluent_tracking_uri(tracking_uri):
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(tmp), tracking_uri=tracking_uri, registry_uri=tracking_uri
            )
        if (got := _find_model_dir(tmp)) is None:
            raise ModelLoadError(f"{ref} ({uri}) holds no model folder ({WEIGHTS} not found)")
        if sha256 and (actual := file_sha256(got / WEIGHTS)) != sha256:
            raise ModelLoadError(
                f"{ref} ({uri}): the downloaded {WEIGHTS} has SHA-256 {actual}, not the {sha256} recorded "
                "when the model was logged: refused"
            )
        shutil.rmtree(dest, ignore_errors=True)  # a stale or damaged entry
        try:
            tmp.rename(dest)
        except OSError:  # another process cached it first
            if _verified(dest, sha256) is None:
                raise
    except MlflowException as exc:
        raise ModelLoadError(f"cannot download model {ref} ({uri}): {exc.message}") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot download model {ref} ({uri}): {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = _verified(dest, sha256)
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
        """What the version's tags say (for display; promote() judges with evidence() instead)."""
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


def _denied(exc: Exception) -> bool:
    """An MLflow server with authentication refused the call to this account (HTTP 403)."""
    return getattr(exc, "error_code", "") == "PERMISSION_DENIED"


def _action_tags(action: str, by: str, reason: str = "", **extra: str) -> dict[str, str]:
    if not by or not by.strip():
        raise RegistryError(f"{action}: say who is acting (by=NAME)")
    tags = {f"{action}_by": by, f"{action}_at": _now(), **extra}
    if reason:
        tags[f"{action}_reason"] = reason
    return tags


def _record(
    client: MlflowClient,
    name: str,
    version: str,
    action: str,
    by: str,
    reason: str = "",
    *,
    on_version: bool = True,
    **extra: str,
) -> None:
    """Record who/when/why of an action as an event tag on the registered model (the audit log) and, for
    display, as tags of the version: an account that may not write version tags (the pipeline's, on a server
    with authentication: see infra/mlflow/setup_auth.py) records the event only."""
    from mlflow.exceptions import MlflowException

    tags = _action_tags(action, by, reason, **extra)
    if on_version:
        try:
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, str(value))
        except MlflowException as exc:
            if not _denied(exc):
                raise
    event = {"action": action, "version": version, "by": by, "at": tags[f"{action}_at"], "reason": reason}
    event.update(extra)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    client.set_registered_model_tag(name, f"event.{stamp}.{action}.v{version}", json.dumps(event))


def _set_approval(client: MlflowClient, name: str, version: str, value: str) -> None:
    """The approval tag itself: only an approver's account may write it on a server with authentication."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_model_version_tag(name, version, "approval", value)
    except MlflowException as exc:
        if not _denied(exc):
            raise
        raise RegistryError(
            f"this MLflow account may not approve or reject {name} version {version}: only accounts with the "
            "role khmer-ocr-approvers can (README: who can do what in MLflow)"
        ) from exc


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
        report = _evaluate_on(client.tracking_uri, f"runs:/{run_id}/model", data, gates)
        log_evaluation(run_id, report, client.tracking_uri)
    elif (report := run_evaluation(run_id, client.tracking_uri)) is None:
        raise RegistryError(
            f"run {run_id} has no evaluation: give the dataset to evaluate it on (--data DATASET)"
        )
    try:
        client.get_registered_model(name)
        new_model = False
    except MlflowException:
        new_model = True  # register_model creates it (and says so, not "already exists")
    import mlflow

    from khmer_ocr.tracking import fluent_tracking_uri

    registered = _action_tags("registered", by, f"run {run_id}", run_id=run_id)
    tags = {**_version_tags(run, report), **registered}  # set at creation: any account that registers can
    with fluent_tracking_uri(client.tracking_uri):
        mv = mlflow.register_model(model_uri, name, tags=tags)
    if new_model:
        client.update_registered_model(
            name, description="Khmer text-line recognizer. Aliases: candidate, champion, previous."
        )
    version = str(mv.version)
    _record(client, name, version, "registered", by, f"run {run_id}", on_version=False, run_id=run_id)
    if report.passed:
        client.set_registered_model_alias(name, CANDIDATE, version)
        _record(client, name, version, "candidate", by, "passes its gates")
    return _info(client, name, version)


def approve(
    version: str | int, by: str, reason: str = "", *, name: str = MODEL_NAME, tracking_uri: str | None = None
) -> VersionInfo:
    """A person approves a version for promotion (tags approval=approved, approved_by, approved_at).

    A rejected version stays rejected (RegistryError): a rejection is a decision about that version, and a
    new decision takes a new version (register the run again)."""
    _action_tags("approved", by)  # every argument checked before anything is written
    client = _client(tracking_uri)
    info = _info(client, name, version)
    if _approval(info) == REJECTED:
        who, why = info.tags.get("rejected_by", "someone"), info.tags.get("rejected_reason", "")
        raise RegistryError(
            f"version {info.version} was rejected by {who}" + (f" ({why})" if why else "") + ": a rejection "
            f"stands; register its run again (khmer-ocr register --run {info.run_id or 'RUN_ID'}) for a new "
            "decision"
        )
    _set_approval(client, name, info.version, APPROVED)
    _record(client, name, info.version, "approved", by, reason)
    return _info(client, name, info.version)


def reject(
    version: str | int, by: str, reason: str, *, name: str = MODEL_NAME, tracking_uri: str | None = None
) -> VersionInfo:
    """A person rejects a version (tags approval=rejected, rejected_by, rejected_reason); it loses
    `candidate`."""
    if not reason.strip():
        raise RegistryError("reject: give a reason")
    _action_tags("rejected", by)  # every argument checked before anything is written
    client = _client(tracking_uri)
    info = _info(client, name, version)
    if CHAMPION in info.aliases:
        raise RegistryError(f"version {info.version} is the champion: roll back or promote another first")
    _set_approval(client, name, info.version, REJECTED)
    _record(client, name, info.version, "rejected", by, reason)
    if CANDIDATE in info.aliases:
        client.delete_registered_model_alias(name, CANDIDATE)
    return _info(client, name, info.version)


def approval_status(version: str | int, *, name: str = MODEL_NAME, tracking_uri: str | None = None) -> str:
    """approved / rejected / pending, from the version's tags (an approval needs a non-blank approved_by)."""
    return _approval(_info(_client(tracking_uri), name, version))


def _approval(info: VersionInfo) -> str:
    if info.approval == APPROVED and not info.tags.get("approved_by", "").strip():
        return PENDING  # a bare tag is not an approval: say who approved
    return info.approval if info.approval in (APPROVED, REJECTED) else PENDING


def _history(client: MlflowClient, name: str) -> list[str]:
    raw = (client.get_registered_model(name).tags or {}).get(CHAMPION_HISTORY, "[]")
    try:
        return [str(v) for v in json.loads(raw)]
    except ValueError:
        return []


def _evaluate_on(tracking_uri: str, model_ref: str, data: str, gates: str) -> EvaluationReport:
    """evaluate() with registry references resolved at tracking_uri (not at $MLFLOW_TRACKING_URI)."""
    from khmer_ocr.evaluation.evaluate import evaluate
    from khmer_ocr.tracking import fluent_tracking_uri

    with fluent_tracking_uri(tracking_uri):  # download_model reads the tracking URI from the environment
        return evaluate(model_ref, data, gates=gates)


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
    return f"compare_{_safe(dataset_version)}_{_safe(split)}_char_accuracy"


def _champion_score(client: MlflowClient, champion: VersionInfo, ours: Evidence) -> tuple[float, str]:
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
        report = _evaluate_on(client.tracking_uri, champion.uri, data, ours.report.gate_set or "milestones")
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
                f"compare.{_safe(dataset_version)}.char_accuracy",
                f"{score:.6f}",
            )  # for display only
        except MlflowException as exc:
            if not _denied(exc):
                raise
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
    reason unless the version is approved (approval=approved with a non-blank approved_by), passes its
    gates and is at least as good as the champion, both judged from the evaluation logged to its run."""
    client = _client(tracking_uri)
    info = _info(client, name, version)
    status = _approval(info)
    if status != APPROVED:
        raise PromotionRefused(
            f"version {info.version} is {status}, not approved: approve it in the MLflow UI (tags "
            f"approval=approved and approved_by=<you>) or run `khmer-ocr approve {info.version} --by NAME`"
        )
    ours = evidence(client, info)
    if not ours.gates_passed:
        failed = ", ".join(ours.failed_gates) or "no gates were checked"
        raise PromotionRefused(
            f"version {info.version} fails its gates: {failed} (gate set {ours.report.gate_set}, "
            f"evaluation logged to run {ours.run_id})"
        )
    champion = get_version(CHAMPION, name=name, tracking_uri=client.tracking_uri)
    if champion is not None and champion.version == info.version:
        raise PromotionRefused(f"version {info.version} is already the champion")
    note = "first champion"
    if champion is not None:
        theirs, how = _champion_score(client, champion, ours)
        if ours.char_accuracy < theirs:
            raise PromotionRefused(
                f"version {info.version} reads {ours.char_accuracy:.2%} of characters, champion "
                f"v{champion.version} {theirs:.2%} on the same data ({how}): not promoted"
            )
        note = f"{ours.char_accuracy:.2%} vs champion v{champion.version} {theirs:.2%} ({how})"
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        _record(client, name, champion.version, "superseded", by, reason, superseded_by=info.version)
    client.set_registered_model_alias(name, CHAMPION, info.version)
    history = [v for v in _history(client, name) if v != info.version] + [info.version]
    client.set_registered_model_tag(name, CHAMPION_HISTORY, json.dumps(history))
    if CANDIDATE in info.aliases:
        from mlflow.exceptions import MlflowException

        try:
            client.delete_registered_model_alias(name, CANDIDATE)
        except MlflowException as exc:  # deleting an alias takes MANAGE: the pipeline's account has EDIT
            if not _denied(exc):
                raise  # (the next registration moves `candidate` anyway)
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
