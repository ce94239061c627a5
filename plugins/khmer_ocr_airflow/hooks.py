"""Hooks for the two services the DAGs talk to, configured by Airflow Connections.

khmer_ocr_mlflow      MLflow tracking server and model registry (conn type http: host, port; schema
                      "https" for TLS; extra {"tracking_uri": ...} to give a whole URI, e.g. sqlite:///...).
                      Without the connection: $MLFLOW_TRACKING_URI, else http://127.0.0.1:5000 (the local
                      stack). The hook hands the tracking URI (or a client on it) to the library, which
                      takes it as an argument: it never changes the process's environment. Credentials of a
                      server with basic auth are MLflow's own, MLFLOW_TRACKING_USERNAME / _PASSWORD in the
                      worker's environment (docker-compose.yml sets them from the same values as the
                      connection's login and password; a login that differs is logged as a warning).
khmer_ocr_torchserve  TorchServe (conn type http: host, port = the management API; extra {"inference_url":
                      ..., "model_store": ..., "key_file": <TorchServe's key_file.json, token auth on>, or
                      fixed "token" / "inference_token"}). Without the connection: management
                      http://127.0.0.1:8081, inference http://127.0.0.1:8080, $TORCHSERVE_KEY_FILE or
                      $TORCHSERVE_MANAGEMENT_TOKEN / $TORCHSERVE_INFERENCE_TOKEN, model store
                      $KHMER_OCR_MODEL_STORE, else <state>/torchserve/model-store (as `khmer-ocr serve`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from khmer_ocr_airflow.paths import state_dir

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
        """The tracking (and registry) URI the library is given."""
        conn = self._connection()
        if conn is not None and conn.login and os.environ.get("MLFLOW_TRACKING_USERNAME") != conn.login:
            self.log.warning(
                "connection %s has the login %r, but this worker's MLFLOW_TRACKING_USERNAME is %r: MLflow "
                "authenticates with the environment's credentials (set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD for the worker)",
                self.mlflow_conn_id, conn.login, os.environ.get("MLFLOW_TRACKING_USERNAME"),
            )  # fmt: skip
        return self._uri(conn, conn.extra_dejson if conn else {})

    async def aget_tracking_uri(self) -> str:
        """The same, from async code (a trigger): no blocking call on the event loop."""
        conn = await self._aconnection()
        return self._uri(conn, await conn.aextra_dejson() if conn else {})

    def get_conn(self) -> Any:
        """An MlflowClient on the tracking and registry URI (khmer_ocr.mlflow_client.client)."""
        from khmer_ocr.mlflow_client import client

        return client(self.get_tracking_uri())


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
