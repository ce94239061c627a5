"""ModelApprovalOperator: wait for a person to approve a registered model version, whichever way they do it.

Two ways count, the first answer wins:
  - MLflow: the version's tags approval=approved and approved_by=<name> (MLflow UI, or
    `khmer-ocr approve VERSION --by NAME`); approval=rejected rejects.
  - Airflow: Approve / Reject on the task's Required actions page (human-in-the-loop, like the standard
    provider's ApprovalOperator, which this extends). The answer is then written to MLflow too
    (khmer_ocr.registry.approve / reject with by="<user> (Airflow)"), so the registry stays the one record
    that khmer_ocr.registry.promote checks.
While waiting the task is deferred to ModelApprovalTrigger (the triggerer polls MLflow asynchronously): it
holds no worker slot. A version already approved or rejected is decided at once, without deferring. A
rejection skips the downstream tasks (nothing to promote); no answer before the timeout fails the task.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.timezone import utcnow

from khmer_ocr.names import MODEL_NAME
from khmer_ocr_airflow.hooks import MlflowRegistryHook
from khmer_ocr_airflow.triggers import ModelApprovalTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_TIMEOUT_MINUTES = 3 * 24 * 60.0


class ModelApprovalOperator(ApprovalOperator):
    """Wait (deferred) until model `version` is approved in MLflow or in Airflow; returns
    {"approved", "version", "by", "via"}."""

    template_fields = (
        *ApprovalOperator.template_fields,
        "version",
        "model_name",
        "poll_interval",
        "timeout_minutes",
    )
    ui_color = "#f6e7a1"

    def __init__(
        self,
        *,
        version: Any,
        model_name: str = MODEL_NAME,
        mlflow_conn_id: str = MlflowRegistryHook.default_conn_name,
        poll_interval: float | str = 30.0,
        timeout_minutes: float | str = DEFAULT_TIMEOUT_MINUTES,
        subject: str = "Promote this khmer-ocr model version to champion?",
        **kwargs: Any,
    ) -> None:
        # the wait is bounded by timeout_minutes; an execution_timeout (e.g. from a DAG's default_args)
        # would be taken by HITLOperator as the response timeout
        kwargs["execution_timeout"] = None
        super().__init__(subject=subject, **kwargs)
        self.version = version
        self.model_name = model_name
        self.mlflow_conn_id = mlflow_conn_id
        self.poll_interval = poll_interval
        self.timeout_minutes = timeout_minutes

    # -------------------------------------------------------------------------------------------- helpers
    def _registry(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        from khmer_ocr import registry

        uri = MlflowRegistryHook(self.mlflow_conn_id).get_tracking_uri()
        return getattr(registry, fn)(*args, name=self.model_name, tracking_uri=uri, **kwargs)

    def _describe(self, info: Any) -> str:
        tags = info.tags
        gates = "\n".join(f"- `{k[5:]}`: {v}" for k, v in sorted(tags.items()) if k.startswith("gate."))
        metrics = ", ".join(f"{k[7:]} {v}" for k, v in sorted(tags.items()) if k.startswith("metric."))
        return (
            f"**{self.model_name} version {info.version}** (run `{info.run_id}`, config "
            f"`{tags.get('config', '?')}`, evaluated on `{tags.get('eval_dataset_version', '?')}`)\n\n"
            f"Metrics: {metrics or 'none recorded'}\n\n"
            f"Gates ({tags.get('gate_set', '?')}):\n{gates or '- none'}"
            "\n\nApprove here, or in MLflow: set the version's tags `approval=approved` and "
            "`approved_by=<you>` (or run `khmer-ocr approve VERSION --by NAME`). The first answer counts."
        )

    def _result(self, approved: bool, by: str, via: str) -> dict[str, Any]:
        return {"approved": approved, "version": str(self.version), "by": by, "via": via}

    # ---------------------------------------------------------------------------------------- execution
    def execute(self, context: Context) -> Any:
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        self.version = str(self.version)
        info = self._registry("get_version", self.version)
        if info is None:
            raise AirflowFailException(f"{self.model_name} has no version {self.version}")
        status = self._registry("approval_status", self.version)
        if status != "pending":
            by = info.tags.get(f"{status}_by", "unknown")
            self.log.info("%s v%s is already %s (by %s)", self.model_name, self.version, status, by)
            return self.execute_complete(
                context, {"source": "mlflow", "approval": status, "by": by, "version": self.version}
            )
        self.subject = f"Promote {self.model_name} v{self.version} to champion?"
        self.body = self._describe(info)
        ti_id = context["task_instance"].id
        upsert_hitl_detail(
            ti_id=ti_id,
            options=self.options,
            subject=self.subject,
            body=self.body,
            defaults=self.defaults,
            multiple=self.multiple,
            params=self.serialized_params,
            assigned_users=self.assigned_users,
        )
        minutes = float(self.timeout_minutes)
        poll = float(self.poll_interval)
        self.log.info(
            "waiting up to %.0f min for approval of %s v%s: MLflow tags approval=approved + approved_by, "
            "or Approve on this task's Required actions page",
            minutes, self.model_name, self.version,
        )  # fmt: skip
        self.defer(
            trigger=ModelApprovalTrigger(
                version=self.version,
                model_name=self.model_name,
                mlflow_conn_id=self.mlflow_conn_id,
                ti_id=ti_id,
                poll_interval=poll,
                timeout_datetime=utcnow() + timedelta(minutes=minutes),
            ),
            method_name="execute_complete",
            # a safety net if no triggerer runs the trigger's own timeout
            timeout=timedelta(minutes=minutes, seconds=max(120.0, 3 * poll)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        self.version = str(self.version)
        if "error" in event:
            raise AirflowFailException(
                f"{event['error']}: approve it (MLflow tags approval=approved + approved_by, or Airflow's "
                "Required actions page), then clear this task to wait again"
            )
        if event.get("source") == "mlflow":
            by, via = event.get("by") or "unknown", "mlflow"
            option = self.APPROVE if event["approval"] == "approved" else self.REJECT
            answer = {
                "chosen_options": [option],
                "params_input": {},
                "responded_at": utcnow(),
                "responded_by_user": {"id": by, "name": by},
            }
        else:  # answered in Airflow (resumed by the api-server, or seen by the trigger)
            answer, via = event, "airflow"
            user = event.get("responded_by_user") or {}
            by = f"{user.get('name') or user.get('id') or 'unknown'} (Airflow)"
            option = (event.get("chosen_options") or [self.REJECT])[0]
            if option == self.APPROVE:
                self._registry("approve", self.version, by, "approved in Airflow")
            else:
                self._registry("reject", self.version, by, "rejected in Airflow")
        verdict = "approved" if option == self.APPROVE else "rejected"
        self.log.info("%s v%s %s by %s via %s", self.model_name, self.version, verdict, by, via)
        super().execute_complete(context=context, event=answer)  # a rejection skips what follows
        return self._result(option == self.APPROVE, by, via)
