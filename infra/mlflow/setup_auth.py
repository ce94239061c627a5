"""Accounts and roles of khmer-ocr's MLflow server (basic-auth app); safe to run again. docker-compose.yml
runs it as the one-shot `mlflow-init`, with the admin account's credentials.

Roles, in MLflow's default workspace:
  khmer-ocr-approvers  people who approve: manage the registered model and edit its versions, so they set
                       the approval tags (approval, approved_by, ...), move and remove the aliases (promote,
                       reject, rollback) and may give other accounts rights on the registered model.
  khmer-ocr-pipeline   the Airflow workers and the trainer (a service account, its password only in .env):
                       create experiments and runs, register model versions and move the registered model's
                       aliases (promote() does so only after a person's approval), but only READ model
                       versions: it cannot write a version's tags, so it can never approve anything; nor
                       remove an alias or grant rights (no MANAGE).
  everyone else        reads everything (default_permission READ) and changes nothing in the registry.
The MLflow admin (MLFLOW_AUTH_ADMIN_USERNAME) manages accounts: add an approver by assigning the role
khmer-ocr-approvers to their account (README.md, "Who can do what in MLflow").

Environment: MLFLOW_TRACKING_URI (the server), MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the
admin), KHMER_OCR_MLFLOW_PIPELINE_USER / _PASSWORD, KHMER_OCR_MLFLOW_APPROVER_USER / _PASSWORD (a first
approver), KHMER_OCR_MODEL_NAME (default khmer-ocr).
"""

from __future__ import annotations

import os
import sys
import time

WORKSPACE = "default"
PIPELINE_ROLE, APPROVER_ROLE = "khmer-ocr-pipeline", "khmer-ocr-approvers"


def role_grants(model: str) -> dict[str, list[tuple[str, str, str]]]:
    """(resource type, pattern, permission) granted to each role."""
    return {
        APPROVER_ROLE: [
            ("workspace", "*", "USE"),
            ("registered_model", model, "MANAGE"),  # MANAGE: removing an alias (reject, rollback)
            ("registered_model_version", "*", "EDIT"),
        ],
        PIPELINE_ROLE: [
            ("workspace", "*", "USE"),
            ("experiment", "*", "EDIT"),
            ("registered_model", model, "EDIT"),
            ("registered_model_version", "*", "READ"),  # no version tags: no approvals
        ],
    }


def _wait(uri: str, timeout_s: float = 120.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=5)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _user(client, username: str, password: str) -> None:
    from mlflow.exceptions import RestException

    try:
        client.get_user(username)
    except RestException:
        client.create_user(username, password)
        print(f"created user {username}")
        return
    client.update_user_password(username, password)  # the password in .env wins (rotation)


def _role(client, name: str, grants: list[tuple[str, str, str]]) -> int:
    roles = {r.name: r for r in client.list_roles(WORKSPACE)}
    role = roles.get(name) or client.create_role(WORKSPACE, name, "khmer-ocr (infra/mlflow/setup_auth.py)")
    have = {(p.resource_type, p.resource_pattern): p for p in client.list_role_permissions(role.id)}
    for resource_type, pattern, permission in grants:
        current = have.get((resource_type, pattern))
        if current is None:
            client.add_role_permission(role.id, resource_type, pattern, permission)
        elif current.permission != permission:
            client.update_role_permission(current.id, permission)
    return role.id


def _registered_model(uri: str, model: str) -> None:
    """Create the registered model as the admin: whoever creates it would own it (MANAGE)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri, registry_uri=uri)
    try:
        client.get_registered_model(model)
    except MlflowException:
        client.create_registered_model(
            model, description="Khmer text-line recognizer. Aliases: candidate, champion, previous."
        )
        print(f"created registered model {model}")


def _assign(client, username: str, role_id: int) -> None:
    if role_id not in {r.id for r in client.list_user_roles(username)}:
        client.assign_role(username, role_id)


def setup(uri: str, model: str, accounts: dict[str, tuple[str, str]]) -> None:
    """accounts: role name -> (username, password)."""
    from mlflow.server.auth.client import AuthServiceClient

    _wait(uri)
    client = AuthServiceClient(uri)
    _registered_model(uri, model)
    grants = role_grants(model)
    for role_name, (username, password) in accounts.items():
        _user(client, username, password)
        _assign(client, username, _role(client, role_name, grants[role_name]))
        print(f"{username}: role {role_name}")


def main() -> int:
    env = os.environ
    required = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    required += ("KHMER_OCR_MLFLOW_PIPELINE_PASSWORD", "KHMER_OCR_MLFLOW_APPROVER_PASSWORD")
    missing = [k for k in required if not env.get(k)]
    if missing:
        print(f"setup_auth: set {', '.join(missing)}", file=sys.stderr)
        return 2
    setup(
        env["MLFLOW_TRACKING_URI"].rstrip("/"),
        env.get("KHMER_OCR_MODEL_NAME") or "khmer-ocr",
        {
            PIPELINE_ROLE: (
                env.get("KHMER_OCR_MLFLOW_PIPELINE_USER") or "pipeline",
                env["KHMER_OCR_MLFLOW_PIPELINE_PASSWORD"],
            ),
            APPROVER_ROLE: (
                env.get("KHMER_OCR_MLFLOW_APPROVER_USER") or "approver",
                env["KHMER_OCR_MLFLOW_APPROVER_PASSWORD"],
            ),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
