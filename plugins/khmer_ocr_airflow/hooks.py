"""Hooks for the two services the DAGs talk to, configured by Airflow Connections.

khmer_ocr_mlflow      MLflow tracking server and model registry (conn type http: host, port; schema
                      "https" for TLS; login/password for basic auth; extra {"tracking_uri": ...} to give a
                      whole URI, e.g. sqlite:///...). Without the connection: $MLFLOW_TRACKING_URI, else
                      http://127.0.0.1:5000 (the local stack).
khmer_ocr_torchserve  TorchServe (conn type http: host, port = the management API; extra {"inference_url":
                      ..., "model_store": ..., "key_file": <TorchServe's key_file.json, token auth on>, or
                      fixed "token" / "inference_token"}). Without the connection: management
                      http://127.0.0.1:8081, inference http://127.0.0.1:8080, $TORCHSERVE_KEY_FILE or
                      $TORCHSERVE_MANAGEMENT_TOKEN / $TORCHSERVE_INFERENCE_TOKEN, model store
                      $KHMER_OCR_MODEL_STORE, else <state>/torchserve/model-store (as `khmer-ocr serve`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

if TYPE_CHECKING:
    from airflow.sdk import Connection

LOCAL_MLFLOW = "http://127.0.0.1:5000"
LOCAL_TORCHSERVE_MANAGEMENT = "http://127.0.0.1:8081"
LOCAL_TORCHSERVE_INFERENCE = "http://127.0.0.1:8080"


def _url(conn: Connection, default_port: int | None = None) -> str:
    """scheme://host:port/path of an http-like connection (a host may already carry its scheme)."""
    host = (conn.host or "127.0.0.1").rstrip("/")
    if "://" in host:
        return host if conn.port is None else f"{host}:{conn.port}"
    scheme = (
        conn.schema
        if conn.schema in ("http", "https")
        else ("https" if conn.conn_type == "https" else "http")
    )
    port = conn.port or default_port
    return f"{scheme}://{host}" + (f":{port}" if port else "")


class MlflowRegistryHook(BaseHook):
    """The MLflow tracking / registry URI (and credentials) from the `khmer_ocr_mlflow` connection."""

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "khmer_ocr_mlflow"
    conn_type = "http"
    hook_name = "khmer-ocr MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    def _connection(self) -> Connection | None:
        try:
            return self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            return None

    async def _aconnection(self) -> Connection | None:
        try:
            return await self.aget_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            return None

    @staticmethod
    def _uri(conn: Connection | None, extra: dict[str, Any]) -> str:
        if conn is None:
            return os.environ.get("MLFLOW_TRACKING_URI") or LOCAL_MLFLOW
        return str(extra.get("tracking_uri") or _url(conn, 5000))

    def get_tracking_uri(self) -> str:
        conn = self._connection()
        return self._uri(conn, conn.extra_dejson if conn else {})

    async def aget_tracking_uri(self) -> str:
        """The same, from async code (a trigger): no blocking call on the event loop."""
        conn = await self._aconnection()
        return self._uri(conn, await conn.aextra_dejson() if conn else {})

    def credentials_env(self) -> dict[str, str]:
        """MLflow's basic-auth environment variables for the connection's login / password, if any."""
        conn = self._connection()
        if conn is None or not conn.login:
            return {}
        return {"MLFLOW_TRACKING_USERNAME": conn.login, "MLFLOW_TRACKING_PASSWORD": conn.password or ""}

    @contextmanager
    def environment(self) -> Iterator[str]:
        """Point this process's MLflow (and so khmer_ocr, which reads MLFLOW_TRACKING_URI for models:/ and
        runs:/ references) at the connection for the duration; yields the tracking URI."""
        uri = self.get_tracking_uri()
        new = {"MLFLOW_TRACKING_URI": uri, **self.credentials_env()}
        old = {k: os.environ.get(k) for k in new}
        os.environ.update(new)
        try:
            yield uri
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def get_conn(self) -> Any:
        """An MlflowClient on the tracking and registry URI."""
        from mlflow import MlflowClient

        uri = self.get_tracking_uri()
        return MlflowClient(uri, registry_uri=uri)


class TorchServeHook(BaseHook):
    """TorchServe's management and inference URLs, tokens and model store from `khmer_ocr_torchserve`."""

    conn_name_attr = "torchserve_conn_id"
    default_conn_name = "khmer_ocr_torchserve"
    conn_type = "http"
    hook_name = "khmer-ocr TorchServe"

    def __init__(self, torchserve_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.torchserve_conn_id = torchserve_conn_id
        self._conn: Connection | None = None
        self._loaded = False

    def _connection(self) -> Connection | None:
        if not self._loaded:
            try:
                self._conn = self.get_connection(self.torchserve_conn_id)
            except AirflowNotFoundException:
                self._conn = None
            self._loaded = True
        return self._conn

    def _extra(self) -> dict[str, Any]:
        conn = self._connection()
        return conn.extra_dejson if conn else {}

    @property
    def management_url(self) -> str:
        conn = self._connection()
        return _url(conn, 8081) if conn else LOCAL_TORCHSERVE_MANAGEMENT

    @property
    def inference_url(self) -> str:
        return str(self._extra().get("inference_url") or LOCAL_TORCHSERVE_INFERENCE).rstrip("/")

    @property
    def token(self) -> str | None:
        """The management API token: extra token, else the password, else $TORCHSERVE_MANAGEMENT_TOKEN."""
        conn = self._connection()
        extra = self._extra().get("token") or (conn.password if conn else None)
        return extra or os.environ.get("TORCHSERVE_MANAGEMENT_TOKEN") or None

    @property
    def inference_token(self) -> str | None:
        return self._extra().get("inference_token") or os.environ.get("TORCHSERVE_INFERENCE_TOKEN") or None

    @property
    def key_file(self) -> str | None:
        """TorchServe's key_file.json (token authorization on; it rotates its keys): extra key_file, else
        $TORCHSERVE_KEY_FILE."""
        return self._extra().get("key_file") or os.environ.get("TORCHSERVE_KEY_FILE") or None

    @property
    def model_store(self) -> str:
        """The folder TorchServe loads archives from, which deploy writes them to: extra model_store, else
        $KHMER_OCR_MODEL_STORE, else <state>/torchserve/model-store (the store of `khmer-ocr serve`)."""
        from khmer_ocr_airflow.common import state_dir

        found = self._extra().get("model_store") or os.environ.get("KHMER_OCR_MODEL_STORE")
        return str(found or state_dir() / "torchserve" / "model-store")

    def get_conn(self) -> Any:
        """A khmer_ocr TorchServeClient for these URLs and tokens."""
        from khmer_ocr.torchserve.client import TorchServeClient

        return TorchServeClient(
            self.management_url,
            self.inference_url,
            token=self.token,
            inference_token=self.inference_token,
            key_file=self.key_file,
        )
