"""The MLflow model registry's release workflow around the registered model `khmer-ocr` (turning model
references into local folders is khmer_ocr.model_store's job; the MLflow client is khmer_ocr.mlflow_client's).

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

Every function takes the registry's `tracking_uri` (None: khmer_ocr.mlflow_client.resolve_tracking_uri).
Modules: versions (VersionInfo, lookups, approval state, audit records), evidence (evaluations logged to
runs, the evidence a promotion decides on), workflow (the actions above).
"""

from khmer_ocr.registry.evidence import (
    EVALUATION_ARTIFACT,
    Evidence,
    evidence,
    log_evaluation,
    run_evaluation,
)
from khmer_ocr.registry.versions import (
    APPROVED,
    CANDIDATE,
    CHAMPION,
    CHAMPION_HISTORY,
    PENDING,
    PREVIOUS,
    REJECTED,
    VersionInfo,
    approval_status,
    get_version,
    list_versions,
)
from khmer_ocr.registry.workflow import approve, promote, register, reject, rollback

__all__ = [
    "APPROVED",
    "CANDIDATE",
    "CHAMPION",
    "CHAMPION_HISTORY",
    "EVALUATION_ARTIFACT",
    "PENDING",
    "PREVIOUS",
    "REJECTED",
    "Evidence",
    "VersionInfo",
    "approval_status",
    "approve",
    "evidence",
    "get_version",
    "list_versions",
    "log_evaluation",
    "promote",
    "register",
    "reject",
    "rollback",
    "run_evaluation",
]
