"""Registered model versions as the release workflow sees them: VersionInfo, lookups, approval state and the
audit records every action leaves (tags on the version and event tags on the registered model)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from khmer_ocr.errors import RegistryError
from khmer_ocr.mlflow_client import client as mlflow_client
from khmer_ocr.names import MODEL_NAME

if TYPE_CHECKING:
    from mlflow import MlflowClient

CANDIDATE, CHAMPION, PREVIOUS = "candidate", "champion", "previous"
APPROVED, REJECTED, PENDING = "approved", "rejected", "pending"
CHAMPION_HISTORY = "champion_history"  # registered-model tag: JSON list of champion versions, oldest first


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_version(client: MlflowClient, name: str, version: str | int) -> VersionInfo:
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
    client = mlflow_client(tracking_uri)
    key = str(alias_or_version)
    if key.isdigit():
        return read_version(client, name, key)
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, key)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None  # no such model or alias
        raise
    return read_version(client, name, mv.version)


def list_versions(*, name: str = MODEL_NAME, tracking_uri: str | None = None) -> list[VersionInfo]:
    """Every version of the registered model, newest first (empty when it does not exist yet)."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    try:
        by_alias = client.get_registered_model(name).aliases or {}
    except MlflowException:
        return []
    versions = client.search_model_versions(f"name = '{name}'")
    return [_version_info(name, mv, by_alias) for mv in sorted(versions, key=lambda mv: -int(mv.version))]


def denied(exc: Exception) -> bool:
    """An MLflow server with authentication refused the call to this account (HTTP 403)."""
    return getattr(exc, "error_code", "") == "PERMISSION_DENIED"


def action_tags(action: str, by: str, reason: str = "", **extra: str) -> dict[str, str]:
    if not by or not by.strip():
        raise RegistryError(f"{action}: say who is acting (by=NAME)")
    tags = {f"{action}_by": by, f"{action}_at": _now(), **extra}
    if reason:
        tags[f"{action}_reason"] = reason
    return tags


def record(
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

    tags = action_tags(action, by, reason, **extra)
    if on_version:
        try:
            for key, value in tags.items():
                client.set_model_version_tag(name, version, key, str(value))
        except MlflowException as exc:
            if not denied(exc):
                raise
    event = {"action": action, "version": version, "by": by, "at": tags[f"{action}_at"], "reason": reason}
    event.update(extra)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    client.set_registered_model_tag(name, f"event.{stamp}.{action}.v{version}", json.dumps(event))


def set_approval(client: MlflowClient, name: str, version: str, value: str) -> None:
    """The approval tag itself: only an approver's account may write it on a server with authentication."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_model_version_tag(name, version, "approval", value)
    except MlflowException as exc:
        if not denied(exc):
            raise
        raise RegistryError(
            f"this MLflow account may not approve or reject {name} version {version}: only accounts with the "
            "role khmer-ocr-approvers can (README: who can do what in MLflow)"
        ) from exc


def approval_status(version: str | int, *, name: str = MODEL_NAME, tracking_uri: str | None = None) -> str:
    """approved / rejected / pending, from the version's tags (an approval needs a non-blank approved_by)."""
    return approval_of(read_version(mlflow_client(tracking_uri), name, version))


def approval_of(info: VersionInfo) -> str:
    if info.approval == APPROVED and not info.tags.get("approved_by", "").strip():
        return PENDING  # a bare tag is not an approval: say who approved
    return info.approval if info.approval in (APPROVED, REJECTED) else PENDING


def champion_history(client: MlflowClient, name: str) -> list[str]:
    raw = (client.get_registered_model(name).tags or {}).get(CHAMPION_HISTORY, "[]")
    try:
        return [str(v) for v in json.loads(raw)]
    except ValueError:
        return []
