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

from airflow.sdk import Param, dag, task
from khmer_ocr_airflow.callbacks import on_dag_failure
from khmer_ocr_airflow.common import CHAMPION, DEFAULT_ARGS, INFRA, MODEL_NAME, START_DATE
from khmer_ocr_airflow.operators import ModelApprovalOperator


@dag(
    dag_id="khmer_ocr_promotion",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    tags=["khmer-ocr", "registry", "approval"],
    doc_md=__doc__,
    default_args=DEFAULT_ARGS,
    on_failure_callback=on_dag_failure,
    params={
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
        "model_name": Param(MODEL_NAME, type="string", description="The registered model in MLflow."),
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
)
def khmer_ocr_promotion():
    @task(multiple_outputs=True, execution_timeout=timedelta(minutes=30), **INFRA)
    def candidate(params=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from khmer_ocr_airflow.common import by, fail_fast, version_dict
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import CANDIDATE, get_version, register

        name = params["model_name"]
        with MlflowRegistryHook().environment() as uri, fail_fast():
            if params["run_id"]:
                info = register(params["run_id"], by=by(dag_run), name=name, tracking_uri=uri)
            else:
                info = get_version(params["version"] or CANDIDATE, name=name, tracking_uri=uri)
        if info is None:
            raise AirflowFailException(f"{name} has no `candidate` version: give run_id or version")
        if not info.gates_passed:
            raise AirflowFailException(f"{name} v{info.version} fails its gates: it cannot be promoted")
        print(f"{name} v{info.version} ({info.uri}), approval {info.approval}, aliases {info.aliases}")
        return version_dict(info)

    @task(execution_timeout=timedelta(minutes=10), **INFRA)
    def auto_approve(version: dict, params=None) -> str:
        from khmer_ocr_airflow.common import fail_fast
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import approve

        if not params["auto_approve"]:
            print("auto_approve is off: a person approves (MLflow tags or Airflow's Required actions page)")
            return "manual"
        name = params["model_name"]
        with MlflowRegistryHook().environment() as uri, fail_fast():
            approve(
                version["version"], "auto_approve", "auto_approve (local demo)", name=name, tracking_uri=uri
            )
        print(f"{name} v{version['version']} approved automatically (demo)")
        return "auto"

    @task(outlets=[CHAMPION], execution_timeout=timedelta(hours=1), **INFRA)
    def promote(version: dict, approval: dict, params=None, dag_run=None, outlet_events=None) -> dict:
        from khmer_ocr_airflow.common import by, fail_fast, version_dict
        from khmer_ocr_airflow.hooks import MlflowRegistryHook

        from khmer_ocr.registry import PREVIOUS, get_version
        from khmer_ocr.registry import promote as promote_version

        name = params["model_name"]
        reason = params["reason"] or f"approved by {approval['by']} via {approval['via']}"
        with MlflowRegistryHook().environment() as uri, fail_fast():
            info = promote_version(version["version"], by(dag_run), reason, name=name, tracking_uri=uri)
            previous = get_version(PREVIOUS, name=name, tracking_uri=uri)
        champion = {
            **version_dict(info),
            "model_uri": info.uri,
            "approved_by": approval["by"],
            "previous": previous.version if previous else None,
        }
        outlet_events[CHAMPION].extra = champion
        print(f"{name} v{info.version} is the champion ({reason})")
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
