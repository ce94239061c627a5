"""
### khmer_ocr_promotion: candidate -> approval -> champion

`candidate` (register a run, or take a version, or the current `candidate` alias; it must pass its gates)
-> `auto_approve` (only with the demo param **auto_approve**) -> `wait_for_approval` -> `promote` (alias
`champion`; the old champion keeps `previous`; Asset `khmer-ocr://registry/khmer-ocr/champion`, which
starts `khmer_ocr_deploy`).

**Approving**: either way counts, the first answer wins.
- in MLflow: on the model version, set the tags `approval=approved` and `approved_by=<your name>` (or run
  `khmer-ocr approve <version> --by <name>`); `approval=rejected` rejects;
- in Airflow: **Approve** / **Reject** on the `wait_for_approval` task's *Required actions* page.

While waiting, the task is *deferred*: the triggerer polls MLflow, no worker slot is held. A rejection skips
`promote`; no answer within **approval_timeout_minutes** fails the task (clear it to wait again).
`promote` itself refuses (and fails, not retried) a version that is worse than the champion on the same
evaluation data.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, task
from khmer_ocr_airflow.assets import CHAMPION
from khmer_ocr_airflow.operators import ModelApprovalOperator
from khmer_ocr_airflow.settings import INFRA, khmer_ocr_dag, model_name_param


@khmer_ocr_dag(
    "khmer_ocr_promotion",
    __doc__,
    ["registry", "approval"],
    {
        "run_id": Param(
            "",
            type="string",
            description="An MLflow run to register first (its evaluation must be attached); "
            "empty: use version.",
        ),
        "version": Param(
            "",
            type="string",
            description="A registered version of khmer-ocr to promote; empty (and no run_id): "
            "the `candidate` alias.",
        ),
        "reason": Param("", type="string", description="Why this promotion (recorded in the registry)."),
        "model_name": model_name_param(),
        "approval_timeout_minutes": Param(
            4320, type="number", exclusiveMinimum=0, description="How long to wait for an approval (3 days)."
        ),
        "poll_seconds": Param(
            30, type="number", exclusiveMinimum=0, description="How often the triggerer asks MLflow."
        ),
        "auto_approve": Param(
            False,
            type="boolean",
            description="Local demo only: approve automatically (recorded as approved_by=auto_approve).",
        ),
    },
    max_active_runs=None,
)
def khmer_ocr_promotion():
    @task(multiple_outputs=True, execution_timeout=timedelta(minutes=30), **INFRA)
    def candidate(params=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from khmer_ocr_airflow.tasks import register, registry, version_dict

        from khmer_ocr.registry import CANDIDATE

        name = params["model_name"]
        if params["run_id"]:
            found = register(params["run_id"], dag_run, name)
        else:
            info = registry("get_version", params["version"] or CANDIDATE, name=name)
            if info is None:
                raise AirflowFailException(f"{name} has no `candidate` version: give run_id or version")
            found = version_dict(info)
        if not found["gates_passed"]:
            raise AirflowFailException(f"{name} v{found['version']} fails its gates: it cannot be promoted")
        shown = f"approval {found['approval']}, aliases {found['aliases']}"
        print(f"{name} v{found['version']} ({found['uri']}), {shown}")
        return found

    @task(execution_timeout=timedelta(minutes=10), **INFRA)
    def auto_approve(version: dict, params=None) -> str:
        from khmer_ocr_airflow.tasks import approve_automatically

        if not params["auto_approve"]:
            print("auto_approve is off: a person approves (MLflow tags or Airflow's Required actions page)")
            return "manual"
        approve_automatically(version["version"], params["model_name"], "auto_approve (local demo)")
        return "auto"

    @task(outlets=[CHAMPION], execution_timeout=timedelta(hours=1), **INFRA)
    def promote(version: dict, approval: dict, params=None, dag_run=None, outlet_events=None) -> dict:
        from khmer_ocr_airflow.tasks import promote as promote_version
        from khmer_ocr_airflow.tasks import registry

        from khmer_ocr.registry import PREVIOUS

        name = params["model_name"]
        reason = params["reason"] or f"approved by {approval['by']} via {approval['via']}"
        promoted = promote_version(version["version"], dag_run, reason, name)
        previous = registry("get_version", PREVIOUS, name=name)
        champion = {
            **promoted,
            "model_uri": promoted["uri"],
            "approved_by": approval["by"],
            "previous": previous.version if previous else None,
        }
        outlet_events[CHAMPION].extra = champion
        return champion

    version = candidate()
    wait = ModelApprovalOperator(
        task_id="wait_for_approval",
        version=version["version"],
        model_name="{{ params.model_name }}",
        poll_interval="{{ params.poll_seconds }}",
        timeout_minutes="{{ params.approval_timeout_minutes }}",
        retries=2,
        retry_delay=timedelta(seconds=30),
        retry_exponential_backoff=2.0,
    )
    auto_approve(version) >> wait
    promote(version, wait.output)


khmer_ocr_promotion()
