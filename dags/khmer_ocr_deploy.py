"""
### khmer_ocr_deploy: serve the champion with TorchServe

Runs whenever the champion changes (Asset `khmer-ocr://registry/khmer-ocr/champion`, emitted by
`khmer_ocr_promotion`), or by hand.

`resolve` (the version to serve, pinned: `models:/khmer-ocr/<version>`) -> `deploy` (model archive into
TorchServe's model store, registered beside the serving version, warmed, smoke-tested against the same model
in process, made the default; the old version unregistered) -> `verify` (the default version is the new one
and answers). If the smoke test or the verification fails, the new version never becomes (or stops being)
the default, and `rollback` (a teardown: it always runs, the run still fails) moves the registry's `champion`
back to `previous` (param **rollback_registry**) and makes sure TorchServe serves it. TorchServe or MLflow
being unreachable is retried, and never rolls anything back.

Deployments run one at a time (pool `torchserve`). Connections: `khmer_ocr_torchserve` (management URL, extra
inference_url, model_store, key_file) and
`khmer_ocr_mlflow`. The CLI equivalent: `khmer-ocr deploy --model models:/khmer-ocr@champion`.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, task
from khmer_ocr_airflow.assets import CHAMPION
from khmer_ocr_airflow.settings import DEPLOY_QUEUE, INFRA, TORCHSERVE_POOL, khmer_ocr_dag

from khmer_ocr.names import MODEL_NAME

FAILURE_KEY = "deterministic_failure"  # XCom pushed by deploy / verify when the model itself failed


@khmer_ocr_dag(
    "khmer_ocr_deploy",
    __doc__,
    ["serving", "torchserve"],
    {
        "model_ref": Param(
            f"models:/{MODEL_NAME}@champion",
            type="string",
            description="Model to serve when run by hand (an asset-triggered run serves the new champion).",
        ),
        "model_name": Param(MODEL_NAME, type="string", description="Model name in TorchServe."),
        "rollback_registry": Param(
            True,
            type="boolean",
            description="On a failed smoke test, move the registry's champion back to previous.",
        ),
    },
    schedule=[CHAMPION],
)
def khmer_ocr_deploy():
    @task(execution_timeout=timedelta(minutes=10), **INFRA)
    def resolve(params=None, triggering_asset_events=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from khmer_ocr_airflow.tasks import registry

        events = triggering_asset_events[CHAMPION] if triggering_asset_events else []
        ref = events[-1].extra["model_uri"] if events else params["model_ref"]
        if ref.startswith("models:/") and "@" in ref:  # pin the alias: the run deploys one version
            name, alias = ref[len("models:/") :].split("@", 1)
            info = registry("get_version", alias, name=name)
            if info is None:
                raise AirflowFailException(f"{ref} is not set: promote a version first (khmer_ocr_promotion)")
            ref = info.uri
        registered, _, version = (
            ref[len("models:/") :].partition("/") if ref.startswith("models:/") else ("", "", "")
        )
        print(f"deploying {ref}")
        return {"model_ref": ref, "registered_model": registered, "version": version}

    @task(pool=TORCHSERVE_POOL, queue=DEPLOY_QUEUE, execution_timeout=timedelta(minutes=30), **INFRA)
    def deploy(target: dict, params=None, ti=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from khmer_ocr_airflow.tasks import deploy_model

        try:
            return deploy_model(target["model_ref"], params["model_name"])
        except AirflowFailException as exc:  # the model failed (smoke test): remember it for rollback
            ti.xcom_push(key=FAILURE_KEY, value=str(exc))
            raise

    @task(execution_timeout=timedelta(minutes=10), **INFRA)
    def verify(deployed: dict, ti=None) -> dict:
        from airflow.sdk.exceptions import AirflowFailException
        from khmer_ocr_airflow.hooks import TorchServeHook

        client = TorchServeHook().get_conn()
        default = client.default_version(deployed["model_name"])
        if default != deployed["version"]:
            name, version = deployed["model_name"], deployed["version"]
            message = f"TorchServe's default {name} version is {default}, not {version}"
            ti.xcom_push(key=FAILURE_KEY, value=message)
            raise AirflowFailException(message)
        print(f"{deployed['model_name']} version {default} is the default and answered the smoke test")
        return deployed

    @task(pool=TORCHSERVE_POOL, queue=DEPLOY_QUEUE, execution_timeout=timedelta(minutes=30), **INFRA)
    def rollback(target: dict, params=None, ti=None, dag_run=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException
        from khmer_ocr_airflow.hooks import TorchServeHook
        from khmer_ocr_airflow.tasks import by, deploy_model, registry

        from khmer_ocr.registry import CHAMPION as CHAMPION_ALIAS

        if ti.xcom_pull(task_ids="verify"):
            print("deployed and verified: nothing to roll back")
            return {}
        failure = ti.xcom_pull(task_ids=["deploy", "verify"], key=FAILURE_KEY)
        failure = next((f for f in failure or [] if f), None)
        if not failure:
            raise AirflowSkipException("TorchServe or MLflow unreachable: nothing rolled back, retry the run")
        name, tried = target["registered_model"], target["version"]
        if not (params["rollback_registry"] and name):
            raise AirflowSkipException(f"registry unchanged ({failure})")
        champion = registry("get_version", CHAMPION_ALIAS, name=name)
        if champion is None or champion.version != tried:
            raise AirflowSkipException(f"{name} v{tried} is not the champion: registry unchanged ({failure})")
        reason = f"deploy of v{tried} failed: {failure}"
        restored = registry("rollback", by(dag_run), reason, name=name)
        served = TorchServeHook().get_conn().default_version(params["model_name"])
        if served != restored.version:
            deploy_model(restored.uri, params["model_name"])
        print(f"rolled back: champion is v{restored.version} again and served ({failure})")
        return {"champion": restored.version, "failed": tried, "reason": failure}

    target = resolve()
    deployed = deploy(target)
    checked = verify(deployed)
    # a teardown: it runs after deploy and verify whatever happened, and the run's state stays theirs
    rollback(target).as_teardown().set_upstream([deployed, checked])


khmer_ocr_deploy()
