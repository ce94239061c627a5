"""The trigger behind ModelApprovalOperator: waits, in the triggerer (no worker slot), for either approval.

Every poll_interval seconds it asks
  - MLflow: the model version's approval tags (khmer_ocr.registry.approval_status: approval=approved plus
    approved_by, or approval=rejected), set in the MLflow UI or with `khmer-ocr approve/reject`;
  - Airflow: the task's human-in-the-loop request (the Required actions page or the HITL REST API). The
    api-server that records such an answer resumes the deferred task itself (with the answer as the event);
    polling the request here is a safety net for an answer recorded without that resume.
The first answer wins. An MLflow answer also closes the Airflow request (so the UI stops asking). After
timeout_datetime the trigger yields a timeout error. MLflow being unreachable is logged and retried at the
next poll: it is not an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID

from airflow.sdk.timezone import utcnow
from airflow.triggers.base import BaseTrigger, TriggerEvent

from khmer_ocr.names import MODEL_NAME
from khmer_ocr_airflow.hooks import MlflowRegistryHook

APPROVE, REJECT = "Approve", "Reject"  # ApprovalOperator's options


class ModelApprovalTrigger(BaseTrigger):
    def __init__(
        self,
        *,
        version: str,
        model_name: str = MODEL_NAME,
        mlflow_conn_id: str = MlflowRegistryHook.default_conn_name,
        ti_id: UUID | str | None = None,
        poll_interval: float = 30.0,
        timeout_datetime: datetime | None = None,
    ) -> None:
        super().__init__()
        self.version = str(version)
        self.model_name = model_name
        self.mlflow_conn_id = mlflow_conn_id
        self.ti_id = UUID(str(ti_id)) if ti_id else None
        self.poll_interval = float(poll_interval)
        self.timeout_datetime = timeout_datetime

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "version": self.version,
                "model_name": self.model_name,
                "mlflow_conn_id": self.mlflow_conn_id,
                "ti_id": str(self.ti_id) if self.ti_id else None,
                "poll_interval": self.poll_interval,
                "timeout_datetime": self.timeout_datetime,
            },
        )

    # ------------------------------------------------------------------------------------------- MLflow
    def _mlflow_decision(self, tracking_uri: str) -> tuple[str, str, str]:
        """(approved|rejected|pending, by, reason) from the registry (blocking: run in a thread)."""
        from khmer_ocr.registry import approval_status, get_version

        status = approval_status(self.version, name=self.model_name, tracking_uri=tracking_uri)
        if status == "pending":
            return status, "", ""
        info = get_version(self.version, name=self.model_name, tracking_uri=tracking_uri)
        tags = info.tags if info else {}
        prefix = "approved" if status == "approved" else "rejected"
        return status, tags.get(f"{prefix}_by", "unknown"), tags.get(f"{prefix}_reason", "")

    # ------------------------------------------------------------------------------------------ Airflow
    async def _airflow_answer(self) -> dict[str, Any] | None:
        from airflow.sdk.execution_time.hitl import get_hitl_detail_content_detail
        from asgiref.sync import sync_to_async

        resp = await sync_to_async(get_hitl_detail_content_detail)(ti_id=self.ti_id)
        if resp is None:  # a supervisor that does not serve HITL requests (dag.test): MLflow only
            raise LookupError("no human-in-the-loop request service here")
        if not (resp.response_received and resp.chosen_options):
            return None
        user = resp.responded_by_user
        return {
            "chosen_options": list(resp.chosen_options),
            "params_input": resp.params_input or {},
            "responded_at": resp.responded_at,
            "responded_by_user": {"id": user.id, "name": user.name} if user else None,
            "timedout": False,
        }

    async def _close_airflow_request(self, option: str) -> None:
        from airflow.sdk.execution_time.hitl import update_hitl_detail_response
        from asgiref.sync import sync_to_async

        try:
            await sync_to_async(update_hitl_detail_response)(
                ti_id=self.ti_id, chosen_options=[option], params_input={}
            )
        except Exception as exc:  # e.g. answered in Airflow at the same moment: the MLflow answer stands
            self.log.info("could not close the Airflow approval request: %s", exc)

    # ---------------------------------------------------------------------------------------------- loop
    async def run(self) -> AsyncIterator[TriggerEvent]:
        tracking_uri = await MlflowRegistryHook(self.mlflow_conn_id).aget_tracking_uri()
        self.log.info(
            "waiting for approval of %s v%s: MLflow at %s (tags approval=approved + approved_by) or "
            "Airflow's Required actions page; timeout %s",
            self.model_name, self.version, tracking_uri, self.timeout_datetime or "none",
        )  # fmt: skip
        ask_airflow = self.ti_id is not None
        while True:
            try:
                status, by, reason = await asyncio.to_thread(self._mlflow_decision, tracking_uri)
            except Exception as exc:  # MLflow down or slow: not an answer, ask again at the next poll
                self.log.warning("MLflow at %s not answering (%s); polling again", tracking_uri, exc)
                status, by, reason = "pending", "", ""
            if status != "pending":
                if ask_airflow:
                    await self._close_airflow_request(APPROVE if status == "approved" else REJECT)
                yield TriggerEvent(
                    {
                        "source": "mlflow",
                        "approval": status,
                        "by": by,
                        "reason": reason,
                        "version": self.version,
                    }
                )
                return
            if ask_airflow:
                try:
                    answer = await self._airflow_answer()
                except Exception as exc:
                    self.log.info("not polling Airflow's approval request (%s); MLflow still counts", exc)
                    ask_airflow, answer = False, None
                if answer:
                    yield TriggerEvent({**answer, "source": "airflow"})
                    return
            if self.timeout_datetime and utcnow() >= self.timeout_datetime:
                yield TriggerEvent(
                    {
                        "error": f"no approval of {self.model_name} v{self.version} by "
                        f"{self.timeout_datetime.isoformat()}",
                        "error_type": "timeout",
                    }
                )
                return
            await asyncio.sleep(self.poll_interval)
