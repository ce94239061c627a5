"""The Airflow DAGs and plugins: parsing, structure, and real runs with `dag.test()`.

Airflow runs against a fresh AIRFLOW_HOME with SQLite (migrated once per session). The data DAG runs end to
end on a tiny dataset with real Great Expectations validation, then again on a corrupted copy (validation
must stop it before anything is published). The promotion DAG runs against a real `mlflow server`: without
an approval it stays waiting until its timeout, and it goes on once the version is approved in MLflow or on
Airflow's human-in-the-loop request.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DAGS, PLUGINS = ROOT / "dags", ROOT / "plugins"
DAG_IDS = {
    "khmer_ocr_data",
    "khmer_ocr_phase3_1_tuning",
    "khmer_ocr_phase3_2_optimization",
    "khmer_ocr_promotion",
    "khmer_ocr_deploy",
    "khmer_ocr_nightly",
    "khmer_ocr_demo",
}
TINY = {"num_samples": 120, "overrides": ["shard_size=40"], "chunks": 2}  # 3 shards over 2 tasks


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """AIRFLOW_HOME in a temporary folder with a migrated SQLite database; Airflow is imported after."""
    home = tmp_path_factory.mktemp("airflow")
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "KHMER_OCR_STATE": str(home / "state"),
    }
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        # A skip here would switch off every DAG test silently (e.g. under `pytest -p airflow`): fail.
        pytest.fail(
            "Airflow was imported before tests/test_dags.py set AIRFLOW_HOME (by a plugin or an earlier "
            "import): its settings point elsewhere; run the DAG tests without importing Airflow first"
        )
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        airflow_bin = Path(sys.executable).parent / "airflow"
        done = subprocess.run(
            [str(airflow_bin), "db", "migrate"], capture_output=True, text=True, env=os.environ.copy()
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        import airflow  # noqa: F401  (now, with these settings: it puts the plugins folder on sys.path)

        yield env


@pytest.fixture(scope="session")
def dagbag(airflow_env: dict[str, str]):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def _test(dagbag, dag_id: str, conf: dict[str, Any]):
    """dag.test(run_conf=conf), then the parsed DAG's params as they were: running tasks in this process,
    dag.test() writes the run's conf into the DAG's own Param objects, which the next run would inherit."""
    dag = dagbag.get_dag(dag_id)
    params = {id(p): p for d in (dag.params, *(t.params for t in dag.tasks)) for p in d.values()}
    saved = {key: p.value for key, p in params.items()}
    try:
        return dag.test(run_conf=conf)
    finally:
        for key, p in params.items():
            p.value = saved[key]


def _states(dag_run) -> dict[str, Any]:
    return {
        (ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): ti.state
        for ti in dag_run.get_task_instances()
    }


# -------------------------------------------------------------------------------------- parsing, shape
# What parsing a DAG file may import of the library: khmer_ocr.names (constants, importing nothing) and the
# package itself (khmer_ocr/__init__.py: its version, nothing else).
PARSE_TIME_MODULES = ["khmer_ocr", "khmer_ocr.names", "khmer_ocr.version"]


def test_dags_parse_without_import_errors_and_without_the_library(dagbag, airflow_env) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == DAG_IDS
    # parsing must stay cheap: nothing of khmer_ocr but its constants, no torch, MLflow or GX at parse time
    code = (
        "import sys; from airflow.dag_processing.dagbag import DagBag; "
        f"b = DagBag(dag_folder={str(DAGS)!r}); assert not b.import_errors, b.import_errors; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('khmer_ocr', 'torch', 'mlflow', 'great_expectations', 'pandas')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == str(PARSE_TIME_MODULES)


def _edges(dag) -> set[tuple[str, str]]:
    return {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}


def _set(text: str) -> set:
    """ "a>b c>d" -> {("a", "b"), ("c", "d")}; "x y" -> {"x", "y"}"""
    return {tuple(w.split(">")) if ">" in w else w for w in text.split()}


# dag_id: (schedule, dependencies, params)
EXPECTED = {
    "khmer_ocr_data": (
        None,
        "plan>generate_shards plan>finalize generate_shards>finalize finalize>validate finalize>publish "
        "validate>publish",
        "profile out num_samples seed chunks overrides overwrite",
    ),
    "khmer_ocr_phase3_1_tuning": (
        None,
        "setup>train train>evaluate page_data>evaluate evaluate>select_best select_best>register_best",
        "data configs profile overrides gates eval_pages out",
    ),
    "khmer_ocr_phase3_2_optimization": (
        None,
        "setup>train train>evaluate page_data>evaluate evaluate>check_gates check_gates>register",
        "init_from data profile overrides gates eval_pages out",
    ),
    "khmer_ocr_promotion": (
        None,
        "candidate>auto_approve candidate>wait_for_approval candidate>promote auto_approve>wait_for_approval "
        "wait_for_approval>promote",
        "run_id version reason model_name approval_timeout_minutes poll_seconds auto_approve",
    ),
    "khmer_ocr_deploy": (
        "asset",
        "resolve>deploy resolve>rollback deploy>verify deploy>rollback verify>rollback",
        "model_ref model_name rollback_registry",
    ),
    "khmer_ocr_nightly": (
        "0 2 * * *",
        "champion>fresh_data champion>page_data champion>train champion>compare fresh_data>validate "
        "validate>train train>compare page_data>compare compare>register_if_better",
        "data_profile num_samples config profile overrides gates eval_pages",
    ),
    "khmer_ocr_demo": (
        None,
        "data>validate validate>train train>evaluate page_data>evaluate evaluate>register "
        "register>auto_approve register>wait_for_approval register>promote auto_approve>wait_for_approval "
        "wait_for_approval>promote promote>deploy",
        "data_profile num_samples config profile init_from overrides gates model_name deploy eval_pages",
    ),
}


@pytest.mark.parametrize("dag_id", sorted(DAG_IDS))
def test_dag_structure(dagbag, dag_id: str) -> None:
    from khmer_ocr_airflow.assets import CHAMPION
    from khmer_ocr_airflow.callbacks import on_dag_failure, on_task_failure

    dag = dagbag.get_dag(dag_id)
    schedule, edges, params = EXPECTED[dag_id]
    assert _edges(dag) == _set(edges)
    assert dag.schedule == ([CHAMPION] if schedule == "asset" else schedule)
    assert set(dag.params) == _set(params)
    for key in dag.params:  # every param has a form description and a default that validates
        param = dag.params.get_param(key)
        assert param.description, f"{dag_id}.{key} has no description"
        param.resolve(param.value)
    assert "khmer-ocr" in dag.tags and len(dag.tags) >= 2
    assert dag.doc_md and dag_id in dag.doc_md
    assert dag.on_failure_callback in (on_dag_failure, [on_dag_failure])
    assert not dag.catchup
    for task in dag.tasks:
        assert task.on_failure_callback in (on_task_failure, [on_task_failure])
        if task.task_type != "ModelApprovalOperator":  # its wait is bounded by the approval timeout
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} has no execution_timeout"


def test_retry_policy(dagbag) -> None:
    """Infrastructure steps retry with exponential backoff; deterministic ones never retry."""
    deterministic = {
        ("khmer_ocr_data", "validate"), ("khmer_ocr_data", "publish"), ("khmer_ocr_nightly", "validate"),
        ("khmer_ocr_demo", "validate"), ("khmer_ocr_phase3_2_optimization", "check_gates"),
        ("khmer_ocr_phase3_1_tuning", "setup"), ("khmer_ocr_phase3_2_optimization", "setup"),
        ("khmer_ocr_demo", "page_data"), ("khmer_ocr_phase3_1_tuning", "page_data"),
    }  # fmt: skip
    infra = {
        ("khmer_ocr_data", "generate_shards"), ("khmer_ocr_promotion", "candidate"),
        ("khmer_ocr_promotion", "promote"), ("khmer_ocr_promotion", "wait_for_approval"),
        ("khmer_ocr_deploy", "deploy"), ("khmer_ocr_deploy", "rollback"), ("khmer_ocr_demo", "deploy"),
        ("khmer_ocr_phase3_1_tuning", "register_best"), ("khmer_ocr_nightly", "register_if_better"),
    }  # fmt: skip
    for dag_id, task_id in deterministic:
        assert dagbag.get_dag(dag_id).get_task(task_id).retries == 0, (dag_id, task_id)
    for dag_id, task_id in infra:
        task = dagbag.get_dag(dag_id).get_task(task_id)
        assert task.retries >= 2 and task.retry_exponential_backoff, (dag_id, task_id)


def test_training_runs_on_the_gpu_pool_and_phase3_1_is_mapped(dagbag) -> None:
    for dag_id in ("khmer_ocr_phase3_1_tuning", "khmer_ocr_phase3_2_optimization", "khmer_ocr_nightly"):
        train = dagbag.get_dag(dag_id).get_task("train")
        assert (train.pool, train.queue) == ("gpu", "gpu")
        assert train.retries == 1  # resumes from its checkpoint
    dag = dagbag.get_dag("khmer_ocr_phase3_1_tuning")
    assert dag.get_task("train").is_mapped and dag.get_task("evaluate").is_mapped
    shards = dagbag.get_dag("khmer_ocr_data").get_task("generate_shards")
    assert shards.is_mapped and shards.pool == "datagen"
    deploy = dagbag.get_dag("khmer_ocr_deploy")
    assert deploy.get_task("deploy").pool == deploy.get_task("rollback").pool == "torchserve"
    # the demo runs wherever Airflow has no pools of its own (default pool only); its training goes to the gpu
    # queue like every training (`make run-distributed`: the gpu worker; LocalExecutor ignores queues)
    demo = dagbag.get_dag("khmer_ocr_demo")
    assert {t.pool for t in demo.tasks} == {"default_pool"}
    assert demo.get_task("train").queue == "gpu" and demo.get_task("train").retries == 1


def test_form_choices_match_the_library(dagbag) -> None:
    from khmer_ocr.config import CONFIG_DIR, profile_path
    from khmer_ocr.names import PHASE3_1, TRAIN_CONFIGS

    assert sorted(PHASE3_1) == sorted(p.stem for p in (CONFIG_DIR / "train" / "phase3_1").glob("*.yaml"))
    for name in TRAIN_CONFIGS:
        assert profile_path("train", name).is_file()
    configs = dagbag.get_dag("khmer_ocr_phase3_1_tuning").params.get_param("configs")
    assert configs.value == list(PHASE3_1) and configs.schema["items"]["enum"] == list(PHASE3_1)


def test_hooks_default_to_the_local_stack_and_read_connections(airflow_env, monkeypatch) -> None:
    from airflow.sdk import Connection
    from khmer_ocr_airflow.hooks import MlflowRegistryHook, TorchServeHook

    def fake(conns: dict[str, Connection]):
        from airflow.sdk.exceptions import AirflowNotFoundException

        def get(conn_id: str) -> Connection:
            if conn_id not in conns:
                raise AirflowNotFoundException(conn_id)
            return conns[conn_id]

        return classmethod(lambda cls, conn_id: get(conn_id))

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("KHMER_OCR_MODEL_STORE", raising=False)
    monkeypatch.setattr(MlflowRegistryHook, "get_connection", fake({}))
    monkeypatch.setattr(TorchServeHook, "get_connection", fake({}))
    assert MlflowRegistryHook().get_tracking_uri() == "http://127.0.0.1:5000"
    ts = TorchServeHook()
    assert (ts.management_url, ts.inference_url) == ("http://127.0.0.1:8081", "http://127.0.0.1:8080")
    assert ts.model_store == os.path.join(airflow_env["KHMER_OCR_STATE"], "torchserve", "model-store")
    client = ts.get_conn()
    assert client.management_url == "http://127.0.0.1:8081"

    mlflow = Connection(conn_id="khmer_ocr_mlflow", conn_type="http", host="mlflow", port=5000, login="u",
                        password="p")  # fmt: skip
    torchserve = Connection(
        conn_id="khmer_ocr_torchserve", conn_type="http", host="torchserve", port=8081,
        extra='{"inference_url": "http://torchserve:8080/", "token": "t", "model_store": "/store", '
        '"key_file": "/keys/key_file.json"}',
    )  # fmt: skip
    monkeypatch.setattr(MlflowRegistryHook, "get_connection", fake({"khmer_ocr_mlflow": mlflow}))
    monkeypatch.setattr(TorchServeHook, "get_connection", fake({"khmer_ocr_torchserve": torchserve}))
    hook = MlflowRegistryHook()
    before = dict(os.environ)
    assert hook.get_tracking_uri() == "http://mlflow:5000"
    client = hook.get_conn()  # the URI goes to the library as an argument: the environment stays as it was
    assert client.tracking_uri == "http://mlflow:5000" and client._registry_uri == "http://mlflow:5000"
    assert dict(os.environ) == before
    ts = TorchServeHook()
    assert (ts.management_url, ts.inference_url, ts.token, ts.model_store) == (
        "http://torchserve:8081", "http://torchserve:8080", "t", "/store"
    )  # fmt: skip
    assert ts.get_conn().key_file == "/keys/key_file.json"


def test_failure_summary_names_the_task_error_and_hint(airflow_env) -> None:
    """(airflow_env: Airflow set up, this project's plugins importable.)"""
    from types import SimpleNamespace

    from khmer_ocr_airflow.callbacks import failure_summary

    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="validate", map_index=-1, try_number=1, log_url="u")
    from airflow.sdk.exceptions import AirflowFailException

    text = failure_summary(
        {"ti": ti, "exception": AirflowFailException("bad labels"), "params": {"profile": "demo"}}
    )
    assert "FAILED d / run r" in text and "task validate" in text and "bad labels" in text
    assert "profile='demo'" in text and "not retried" in text and "log: u" in text


# ------------------------------------------------------------------------------------ data, end to end
def _asset_events(uri: str) -> list[dict]:
    from airflow import settings
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    with settings.Session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
        ).all()
        return [dict(e.extra or {}) for e in sorted(rows, key=lambda e: e.timestamp)]


@pytest.fixture(scope="module")
def data_run(dagbag, airflow_env, tmp_path_factory):
    """khmer_ocr_data run once on a tiny profile (3 shards over 2 mapped tasks)."""
    out = tmp_path_factory.mktemp("data") / "ds"
    dag_run = _test(dagbag, "khmer_ocr_data", {**TINY, "out": str(out)})
    return dag_run, out


def test_data_dag_generates_validates_and_publishes(data_run) -> None:
    from khmer_ocr_airflow.assets import DATASET

    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.reader import Dataset

    dag_run, out = data_run
    states = _states(dag_run)
    assert dag_run.state == "success", states
    assert states["generate_shards[0]"] == states["generate_shards[1]"] == "success"
    ds = Dataset(out)
    assert len(ds) == 120 and (out / "validation.html").is_file()
    events = _asset_events(DATASET.uri)
    assert events[-1]["version"] == ds.card["version"] and events[-1]["uri"] == str(out)
    assert events[-1]["validation_report"] == str(out / "validation.html")
    assert events[-1]["num_samples"] == 120 and "split" in events[-1]["counts"]
    ti = next(t for t in dag_run.get_task_instances() if t.task_id == "validate")
    assert ti.xcom_pull(task_ids="validate", key="validation_report") == str(out / "validation.html")
    # the mapped, sharded generation writes the same dataset as one generate_dataset call
    import yaml

    from khmer_ocr.config import from_dict
    from khmer_ocr.data.writer import generate_dataset

    cfg = from_dict(DataConfig, yaml.safe_load((out / "config.yaml").read_text()))
    single = generate_dataset(cfg, out.parent / "single", workers=1, progress=False)
    differ = [
        {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
        for a, b in zip(ds.records, Dataset(single.uri).records, strict=True)
        if a != b
    ]
    assert single.version == ds.card["version"], differ[:3]  # the fields of the first records that differ


def test_data_dag_stops_on_a_failed_validation(data_run, dagbag, capfd, caplog) -> None:
    import json

    from khmer_ocr_airflow.assets import DATASET

    _, good = data_run
    bad = good.parent / "bad"
    shutil.copytree(good, bad)
    (bad / "manifest.jsonl").unlink()  # the run finalizes it again from the shards
    rec = json.loads((bad / "shards" / "shard-00001.jsonl").read_text().splitlines()[0])
    with open(bad / rec["shard"], "r+b") as f:  # damage one image: its checksum no longer matches
        f.seek(rec["offset"] + rec["size"] // 2)
        f.write(b"\x00" * 16)
    before = len(_asset_events(DATASET.uri))
    dag_run = _test(dagbag, "khmer_ocr_data", {**TINY, "out": str(bad)})
    states = _states(dag_run)
    assert dag_run.state == "failed"
    assert states["finalize"] == "success" and states["validate"] == "failed"
    assert states["publish"] == "upstream_failed"
    assert len(_asset_events(DATASET.uri)) == before  # nothing published
    ti = next(t for t in dag_run.get_task_instances() if t.task_id == "validate")
    assert ti.xcom_pull(task_ids="validate", key="validation_report") == str(bad / "validation.html")
    log = capfd.readouterr()
    text = log.out + log.err + caplog.text
    assert "checksum_match" in text and str(bad / "validation.html") in text
    assert "khmer-ocr: FAILED khmer_ocr_data" in text


def test_sharded_generation_on_s3_matches_generate_dataset(s3_env: str, tmp_path: Path) -> None:
    """prepare_dataset / generate_shards / finalize_dataset (what the mapped tasks call) on s3://."""
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.reader import Dataset
    from khmer_ocr.data.writer import finalize_dataset, generate_dataset, generate_shards, prepare_dataset

    cfg = DataConfig(name="s", num_samples=60, shard_size=20, seed=4, difficulty={1: 1.0})
    out = f"{s3_env}/ds"
    assert prepare_dataset(cfg, out) == [0, 1, 2]
    assert generate_shards(cfg, out, [2]) == 20 and generate_shards(cfg, out, [0, 1, 2]) == 40
    result = finalize_dataset(cfg, out)
    assert result.version == generate_dataset(cfg, tmp_path / "local", workers=1, progress=False).version
    assert len(Dataset(out)) == 60 and prepare_dataset(cfg, out) == []


# ---------------------------------------------------------------------------------- approval, promotion
@pytest.fixture
def registry_env(mlflow_env: str, monkeypatch: pytest.MonkeyPatch, airflow_env) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_KHMER_OCR_MLFLOW", mlflow_env)  # the hook reads the connection
    return mlflow_env


def _pending_version(tracking_uri: str) -> tuple[str, str]:
    """A registered model of its own with one version that passes its gates, approval pending. promote()
    reads the gates and metrics from the evaluation logged to the version's run: one is logged there."""
    from mlflow import MlflowClient

    from khmer_ocr.evaluation.gates import Gate, GateConfig
    from khmer_ocr.evaluation.report import build_report
    from khmer_ocr.registry import log_evaluation

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    name = f"khmer-ocr-test-{uuid.uuid4().hex[:8]}"
    exp = client.get_experiment_by_name("dag-tests") or client.create_experiment("dag-tests")
    exp_id = exp if isinstance(exp, str) else exp.experiment_id
    run = client.create_run(exp_id)
    refs = ["ភាសាខ្មែរ"] * 10
    report = build_report(
        f"runs:/{run.info.run_id}/model", "dag-test-data", "t-0", {"test": (refs, [*refs[:9], "ភាសា"])},
        {"ms_p50": 5.0}, GateConfig([Gate("milestone_1_char_acc_60", "char_accuracy", ">=", 0.6)]),
    )  # fmt: skip
    log_evaluation(run.info.run_id, report, tracking_uri)
    client.create_registered_model(name)
    tags = {
        "gates_passed": "true",
        "approval": "pending",
        "metric.char_accuracy": "0.9",
        "eval_dataset_version": "t-0",
        "gate.milestone_1_char_acc_60": "PASS 0.9 >= 0.6",
    }
    mv = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags
    )
    return name, str(mv.version)


def _promote(dagbag, name: str, version: str, **conf: Any):
    conf = {
        "model_name": name,
        "version": version,
        "poll_seconds": 0.5,
        "approval_timeout_minutes": 1,
        **conf,
    }
    start = time.monotonic()
    dag_run = _test(dagbag, "khmer_ocr_promotion", conf)
    return dag_run, _states(dag_run), time.monotonic() - start


def _champion(name: str, tracking_uri: str):
    from khmer_ocr.registry import get_version

    return get_version("champion", name=name, tracking_uri=tracking_uri)


def test_approval_wait_blocks_until_its_timeout(dagbag, registry_env: str) -> None:
    from khmer_ocr.registry import approval_status

    name, version = _pending_version(registry_env)
    dag_run, states, seconds = _promote(dagbag, name, version, approval_timeout_minutes=0.05)
    assert dag_run.state == "failed", states
    assert states["wait_for_approval"] == "failed" and states["promote"] == "upstream_failed"
    assert seconds >= 3.0  # it waited (deferred) the whole 3 s
    assert approval_status(version, name=name, tracking_uri=registry_env) == "pending"
    assert _champion(name, registry_env) is None


def test_mlflow_approval_lets_the_promotion_proceed(dagbag, registry_env: str, monkeypatch) -> None:
    """The version is approved only once the wait is deferred and its trigger has seen it pending, so the
    waiting path runs (a timer could fire before the DAG reaches the wait: the operator would then decide
    at once, without deferring, and nothing would show it)."""
    from khmer_ocr_airflow.triggers import ModelApprovalTrigger

    from khmer_ocr.registry import approve

    name, version = _pending_version(registry_env)
    seen: list[str] = []  # what the trigger read from MLflow at each poll
    pending = threading.Event()
    read = ModelApprovalTrigger._mlflow_decision

    def watched(self, tracking_uri: str):
        decision = read(self, tracking_uri)
        seen.append(decision[0])
        if decision[0] == "pending":
            pending.set()
        return decision

    monkeypatch.setattr(ModelApprovalTrigger, "_mlflow_decision", watched)
    kwargs = {"name": name, "tracking_uri": registry_env}
    finished = threading.Event()

    def approve_once_waiting() -> None:
        if pending.wait(90) and not finished.is_set():
            approve(version, "alice", "looks good", **kwargs)

    approver = threading.Thread(target=approve_once_waiting)
    approver.start()
    try:
        dag_run, states, _ = _promote(dagbag, name, version)
    finally:
        finished.set()
        pending.set()  # never leave the thread waiting
        approver.join()
    assert dag_run.state == "success", states
    # the trigger ran (the task was deferred), saw the version pending, then saw the approval
    assert seen and seen[0] == "pending" and seen[-1] == "approved", f"decisions the trigger read: {seen}"
    ti = next(t for t in dag_run.get_task_instances() if t.task_id == "wait_for_approval")
    assert ti.xcom_pull(task_ids="wait_for_approval") == {
        "approved": True, "version": version, "by": "alice", "via": "mlflow"
    }  # fmt: skip
    champion = _champion(name, registry_env)
    assert champion is not None and champion.version == version


def _airflow_answer(option: str, user: str) -> dict:
    """The event the api-server resumes the deferred task with when someone answers on the Required actions
    page (built by Airflow's own HITLDetail.as_resume_event_payload)."""
    from airflow.models.hitl import HITLDetail
    from airflow.sdk import timezone

    detail = HITLDetail(ti_id=uuid.uuid4(), options=["Approve", "Reject"], subject="s", body="b")
    detail.chosen_options = [option]
    detail.responded_by = {"id": user, "name": user}
    detail.responded_at = timezone.utcnow()
    detail.params_input = {}
    return detail.as_resume_event_payload()


@pytest.mark.parametrize("option", ["Approve", "Reject"])
def test_an_answer_in_airflow_is_recorded_in_mlflow(registry_env: str, option: str) -> None:
    from khmer_ocr_airflow.operators import ModelApprovalOperator

    from khmer_ocr.registry import get_version

    name, version = _pending_version(registry_env)
    op = ModelApprovalOperator(task_id="wait_for_approval", version=version, model_name=name)
    result = op.execute_complete(context={}, event=_airflow_answer(option, "bob"))
    assert result == {
        "approved": option == "Approve",
        "version": version,
        "by": "bob (Airflow)",
        "via": "airflow",
    }
    info = get_version(version, name=name, tracking_uri=registry_env)
    if option == "Approve":  # promote() reads the registry: the Airflow answer is an approval there too
        assert info.approval == "approved" and info.tags["approved_by"] == "bob (Airflow)"
    else:
        assert info.approval == "rejected" and info.tags["rejected_by"] == "bob (Airflow)"


def test_a_rejection_in_mlflow_skips_the_promotion(dagbag, registry_env: str) -> None:
    from khmer_ocr.registry import reject

    name, version = _pending_version(registry_env)
    reject(version, "carol", "too slow", name=name, tracking_uri=registry_env)
    _, states, _ = _promote(dagbag, name, version)
    assert states["wait_for_approval"] == "success" and states["promote"] == "skipped", states
    assert _champion(name, registry_env) is None


def test_auto_approve_promotes_without_waiting(dagbag, registry_env: str) -> None:
    name, version = _pending_version(registry_env)
    dag_run, states, seconds = _promote(dagbag, name, version, auto_approve=True)
    assert dag_run.state == "success", states
    assert _champion(name, registry_env).version == version
    assert timedelta(seconds=seconds) < timedelta(seconds=30)


# ---------------------------------------------------------------------------- training DAGs, chained
@pytest.mark.slow
def test_training_dags_chain_tuning_optimization_promotion_nightly(
    data_run, dagbag, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phase 3.1 (two configurations, mapped) -> phase 3.2 from its best (gates fail, then pass) -> promotion
    -> nightly fine-tune of the champion, each on tiny settings and a registry of their own (a SQLite MLflow
    store given as the connection's tracking_uri extra)."""
    import json

    from khmer_ocr_airflow.assets import PHASE3_1_BEST

    from khmer_ocr.registry import get_version

    monkeypatch.chdir(tmp_path)  # MLflow's local artifact root
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    conn = {"conn_type": "http", "extra": {"tracking_uri": store}}
    monkeypatch.setenv("AIRFLOW_CONN_KHMER_OCR_MLFLOW", json.dumps(conn))
    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tiny = [
        "model.size=tiny",
        "optim.batch_size=8",
        "optim.epochs=1",
        "max_steps_per_epoch=2",
        "data.max_val_lines=8",
    ]
    gates = tmp_path / "open.yaml"
    gates.write_text(
        'gates:\n  - {name: any, metric: char_accuracy, op: ">=", threshold: 0.0, description: "x"}\n'
    )

    def run(dag_id: str, **conf: Any) -> dict[str, Any]:
        return _states(_test(dagbag, dag_id, conf))

    states = run(
        "khmer_ocr_phase3_1_tuning",
        configs=["conservative_small", "ctc_alignment_free"],
        overrides=tiny,
        eval_pages=4,
    )
    assert set(states.values()) == {"success"} and "train[1]" in states and "evaluate[1]" in states, states
    best = _asset_events(PHASE3_1_BEST.uri)[-1]
    assert best["version"] == "1" and best["model_uri"] == "models:/khmer-ocr/1"
    runs = Path(os.environ["KHMER_OCR_STATE"]) / "runs" / "phase3_1"
    comparison = next(runs.glob("*/comparison.md")).read_text()
    assert "| conservative_small |" in comparison and "page CER |" in comparison

    states = run("khmer_ocr_phase3_2_optimization", overrides=tiny, eval_pages=0)  # milestones: not met
    assert states["check_gates"] == "failed" and states["register"] == "upstream_failed", states
    states = run("khmer_ocr_phase3_2_optimization", overrides=tiny, gates=str(gates), eval_pages=0)
    assert set(states.values()) == {"success"}, states
    candidate = get_version("candidate", tracking_uri=store)
    assert candidate.version == "2" and candidate.tags["phase"] == "3.2"

    states = run("khmer_ocr_promotion", auto_approve=True, poll_seconds=0.5)
    assert set(states.values()) == {"success"}, states
    assert get_version("champion", tracking_uri=store).version == "2"

    conf = {"num_samples": 120, "overrides": tiny, "gates": str(gates), "eval_pages": 4}
    dag_run = _test(dagbag, "khmer_ocr_nightly", conf)
    _check_nightly_decision(dag_run, store, versions_before=2)


def _check_nightly_decision(dag_run, store: str, versions_before: int) -> dict:
    """register_if_better ran or was skipped as the comparison it got decided, and the registry agrees."""
    from khmer_ocr.registry import list_versions

    states = _states(dag_run)
    assert states["compare"] == "success", states
    ti = next(t for t in dag_run.get_task_instances() if t.task_id == "compare")
    comparison = ti.xcom_pull(task_ids="compare")
    new, old = comparison["new"]["char_accuracy"], comparison["champion"]["char_accuracy"]
    assert comparison["better"] == (new > old), comparison
    assert states["register_if_better"] == ("success" if comparison["better"] else "skipped"), states
    versions = list_versions(tracking_uri=store)
    assert len(versions) == versions_before + (1 if comparison["better"] else 0)
    if comparison["better"]:
        assert versions[0].run_id == comparison["run_id"] and versions[0].aliases == ["candidate"]
    return comparison


@pytest.mark.slow
def test_nightly_registers_a_fine_tuned_model_only_when_it_is_better(
    dagbag, airflow_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """khmer_ocr_nightly three times on a registry of its own: no champion (the night is skipped); a
    champion whose BatchNorm statistics were reset (it reads almost nothing) fine-tuned with lr 0, which
    only re-estimates those statistics (much better: registered); that new model as champion fine-tuned
    with lr 1.0, which wrecks the weights (worse: nothing registered). The comparison's own numbers decide,
    and the test checks the task states and the registry against them."""
    import json

    import yaml
    from safetensors.torch import load_file, save_file

    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.writer import generate_dataset
    from khmer_ocr.model_folder import REFERENCE_MODEL
    from khmer_ocr.registry import approve, list_versions, promote, register
    from khmer_ocr.tracking import log_model_folder

    monkeypatch.chdir(tmp_path)  # MLflow's local artifact root
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(
        "AIRFLOW_CONN_KHMER_OCR_MLFLOW", json.dumps({"conn_type": "http", "extra": {"tracking_uri": store}})
    )
    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    gates = tmp_path / "open.yaml"
    gates.write_text('gates:\n  - {name: any, metric: char_accuracy, op: ">=", threshold: 0.0}\n')
    reference = yaml.safe_load((REFERENCE_MODEL / "model.yaml").read_text(encoding="utf-8"))["model"]
    like_the_reference = [  # the committed model's shape: its weights transfer whole
        f"model.size={reference['size']}",
        f"model.input_height={reference['input_height']}",
        "optim.batch_size=8",
        "data.max_val_lines=8",
    ]
    conf = {"num_samples": 120, "config": "production_fast", "gates": str(gates), "eval_pages": 0}

    dag_run = _test(dagbag, "khmer_ocr_nightly", {**conf, "overrides": like_the_reference})
    assert set(_states(dag_run).values()) == {"skipped"}, _states(dag_run)  # no champion yet

    reset = tmp_path / "bn-reset"
    shutil.copytree(REFERENCE_MODEL, reset)
    weights = load_file(str(reset / "model.safetensors"))
    for key, tensor in weights.items():
        if key.endswith(("running_mean", "running_var")):
            weights[key] = tensor * 0 + (1 if key.endswith("running_var") else 0)
    save_file(weights, str(reset / "model.safetensors"))
    data = tmp_path / "ds"
    generate_dataset(
        DataConfig(name="n", num_samples=60, shard_size=60, seed=2, difficulty={1: 1.0}),
        data,
        workers=1,
        progress=False,
    )
    first = register(
        log_model_folder(reset, tracking_uri=store), data=str(data), gates=str(gates), tracking_uri=store
    )
    approve(first.version, "alice", tracking_uri=store)
    promote(first.version, "alice", tracking_uri=store)

    lr0 = [
        *like_the_reference,
        "optim.lr=0",
        "optim.epochs=5",
        "max_steps_per_epoch=12",
        "data.curriculum=false",
    ]
    better = _check_nightly_decision(_test(dagbag, "khmer_ocr_nightly", {**conf, "overrides": lr0}), store, 1)
    assert better["better"] and better["new"]["char_accuracy"] > better["champion"]["char_accuracy"] + 0.3

    second = list_versions(tracking_uri=store)[0].version
    approve(second, "alice", tracking_uri=store)
    promote(second, "alice", tracking_uri=store)
    wreck = [*like_the_reference, "optim.lr=1.0", "optim.epochs=1", "max_steps_per_epoch=12"]
    worse = _check_nightly_decision(
        _test(dagbag, "khmer_ocr_nightly", {**conf, "overrides": wreck}), store, 2
    )
    assert not worse["better"] and worse["new"]["char_accuracy"] < worse["champion"]["char_accuracy"] - 0.3


# ------------------------------------------------------------------------------- the demo, end to end


@pytest.fixture
def torchserve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_env) -> Iterator[Any]:
    """A real, empty TorchServe on free ports; the khmer_ocr_torchserve connection points at it."""
    import json

    from khmer_ocr.processes import free_port
    from khmer_ocr.torchserve.server import Ports, TorchServeProcess

    ts = TorchServeProcess(tmp_path / "ts", Ports(*(free_port() for _ in range(5))))
    ts.start()
    conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": ts.ports.management,
        "extra": {"inference_url": ts.client.inference_url, "model_store": str(ts.model_store)},
    }
    monkeypatch.setenv("AIRFLOW_CONN_KHMER_OCR_TORCHSERVE", json.dumps(conn))
    try:
        yield ts
    finally:
        ts.stop()


@pytest.mark.slow
def test_demo_chain_registers_approves_promotes_and_serves(dagbag, registry_env: str, torchserve) -> None:
    from khmer_ocr.data.reader import Dataset
    from khmer_ocr.registry import get_version

    name = f"khmer-ocr-demo-{uuid.uuid4().hex[:8]}"
    conf = {
        "num_samples": 400,
        "model_name": name,
        "overrides": ["optim.lr=0.0003", "max_steps_per_epoch=5", "optim.epochs=1"],
    }
    dag_run = _test(dagbag, "khmer_ocr_demo", conf)
    states = _states(dag_run)
    assert dag_run.state == "success", states
    assert set(states.values()) == {"success"}, states
    champion = get_version("champion", name=name, tracking_uri=registry_env)
    assert champion is not None and champion.version == "1"
    assert champion.approval == "approved" and champion.tags["approved_by"] == "auto_approve"
    # pages were read beside the lines (page_data: eval_pages synthetic pages), not gated
    from khmer_ocr.pages import LINE_FINDER_VERSION

    assert champion.tags["line_finder_version"] == LINE_FINDER_VERSION
    assert (
        0.0 <= float(champion.tags["metric.page_cer"]) < 0.5
        and float(champion.tags["metric.line_recall"]) > 0.8
    )
    assert torchserve.client.default_version("khmer-ocr") == champion.version
    ds = Dataset(Path(os.environ["KHMER_OCR_STATE"]) / "datasets" / "demo")
    answer = torchserve.client.predict("khmer-ocr", ds.image_bytes(ds.split("test")[0]))
    assert answer.status == 200 and answer.body["text"]

    # a champion that cannot be served: khmer_ocr_deploy fails, and its rollback restores the previous one
    from mlflow import MlflowClient

    from khmer_ocr.registry import approve, log_evaluation, promote, run_evaluation

    client = MlflowClient(registry_env, registry_uri=registry_env)
    run = client.create_run(client.get_experiment_by_name("khmer-ocr").experiment_id)  # logs no model
    # the champion's evaluation, so that promote() finds the evidence it decides on (and a tie: promoted)
    log_evaluation(run.info.run_id, run_evaluation(champion.run_id, registry_env), registry_env)
    tags = {k: v for k, v in champion.tags.items() if k.startswith(("gate", "eval_", "metric."))}
    broken = client.create_model_version(
        name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={**tags, "approval": "pending"}
    ).version
    approve(broken, "dave", name=name, tracking_uri=registry_env)
    promote(broken, "dave", name=name, tracking_uri=registry_env)
    dag_run = _test(dagbag, "khmer_ocr_deploy", {"model_ref": f"models:/{name}@champion"})
    states = _states(dag_run)
    assert dag_run.state == "failed", states
    assert states["deploy"] == "failed" and states["verify"] == "upstream_failed", states
    assert states["rollback"] == "success", states
    assert get_version("champion", name=name, tracking_uri=registry_env).version == champion.version
    assert torchserve.client.default_version("khmer-ocr") == champion.version


# ------------------------------------------------------------------------------------ deploy DAG paths
@pytest.fixture
def deployable(registry_env: str, tmp_path: Path) -> tuple[str, str]:
    """A registered model of its own whose versions 1 and 2 are the reference model (deployable,
    evaluated under an open gate set), both pending; returns (name, run id)."""
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.writer import generate_dataset
    from khmer_ocr.model_folder import REFERENCE_MODEL
    from khmer_ocr.registry import register
    from khmer_ocr.tracking import log_model_folder

    name = f"khmer-ocr-deploy-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "ds"
    cfg = DataConfig(name="d", num_samples=60, shard_size=60, seed=5, difficulty={1: 1.0})
    generate_dataset(cfg, data, workers=1, progress=False)
    gates = tmp_path / "open.yaml"
    gates.write_text('gates:\n  - {name: any, metric: char_accuracy, op: ">=", threshold: 0.0}\n')
    run_id = log_model_folder(REFERENCE_MODEL, tracking_uri=registry_env)
    register(run_id, data=str(data), gates=str(gates), name=name, tracking_uri=registry_env)
    register(run_id, name=name, tracking_uri=registry_env)
    return name, run_id


@pytest.mark.slow
def test_deploy_dag_on_the_champion_asset_verification_and_unreachable_paths(
    dagbag, registry_env: str, torchserve, deployable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """khmer_ocr_deploy on a real TorchServe: (1) run by the Asset event the promotion DAG emits (it deploys
    the version the event names), (2) a deployment that TorchServe no longer serves by verification time
    fails `verify`, and `rollback` restores the previous champion in the registry and in TorchServe, (3) an
    unreachable TorchServe fails `deploy` and rolls nothing back."""
    import json

    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent, AssetModel
    from khmer_ocr_airflow import tasks
    from khmer_ocr_airflow.assets import CHAMPION
    from sqlalchemy import select

    from khmer_ocr.model_folder import REFERENCE_MODEL
    from khmer_ocr.names import MODEL_NAME
    from khmer_ocr.registry import approve, get_version, promote
    from khmer_ocr.torchserve.archive import build_archive

    name, _ = deployable
    served = "khmer-ocr-served"
    client = torchserve.client

    # (1) the promotion DAG moves champion and emits the Asset event; the deploy run it triggers serves it
    states = _states(
        _test(dagbag, "khmer_ocr_promotion", {"model_name": name, "version": "1", "auto_approve": True})
    )
    assert states["promote"] == "success", states
    create = dagrun_module.get_or_create_dagrun

    def asset_triggered(**kwargs):  # dag.test() makes manual runs: give this one the event, as the scheduler
        run = create(**kwargs)
        session = kwargs["session"]
        event = session.scalars(
            select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == CHAMPION.uri).order_by(AssetEvent.timestamp.desc())
        ).first()  # fmt: skip
        run.consumed_asset_events.append(event)
        session.commit()
        return run

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", asset_triggered)
    dag_run = _test(dagbag, "khmer_ocr_deploy", {"model_name": served})  # model_ref: its default, unused
    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", create)
    states = _states(dag_run)
    assert dag_run.state == "success" and set(states.values()) == {"success"}, states
    resolved = next(t for t in dag_run.get_task_instances() if t.task_id == "resolve").xcom_pull(
        task_ids="resolve"
    )
    assert resolved == {"model_ref": f"models:/{name}/1", "registered_model": name, "version": "1"}
    assert client.default_version(served) == "1"

    # (2) v2 becomes champion; right after its deployment another version takes TorchServe's default
    approve("2", "alice", name=name, tracking_uri=registry_env)
    promote("2", "alice", name=name, tracking_uri=registry_env)
    real_deploy = tasks.deploy_model
    intruded: list[str] = []

    def deploy_then_intrude(model_ref: str, model_name: str = MODEL_NAME) -> dict:
        result = real_deploy(model_ref, model_name)
        if not intruded:  # once: someone else registers version 99 and makes it the default
            archive = build_archive(
                REFERENCE_MODEL, torchserve.model_store, model_name=model_name, version="99"
            )
            client.register(archive.name, model_name)
            client.set_default(model_name, "99")
            intruded.append("99")
        return result

    monkeypatch.setattr(tasks, "deploy_model", deploy_then_intrude)
    dag_run = _test(
        dagbag, "khmer_ocr_deploy", {"model_ref": f"models:/{name}@champion", "model_name": served}
    )
    states = _states(dag_run)
    assert dag_run.state == "failed", states
    assert (states["deploy"], states["verify"], states["rollback"]) == ("success", "failed", "success"), (
        states
    )
    assert get_version("champion", name=name, tracking_uri=registry_env).version == "1"
    assert client.default_version(served) == "1"  # the restored champion, served again
    monkeypatch.setattr(tasks, "deploy_model", real_deploy)

    # (3) TorchServe unreachable: deploy fails (its retries off here: each would fail the same way, minutes
    # apart), rollback is skipped, the registry is left alone
    from khmer_ocr.processes import free_port

    extra = {"inference_url": f"http://127.0.0.1:{free_port()}", "model_store": str(torchserve.model_store)}
    down = {"conn_type": "http", "host": "127.0.0.1", "port": free_port(), "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_KHMER_OCR_TORCHSERVE", json.dumps(down))
    deploy_task = dagbag.get_dag("khmer_ocr_deploy").get_task("deploy")
    monkeypatch.setattr(deploy_task, "retries", 0)
    dag_run = _test(
        dagbag, "khmer_ocr_deploy", {"model_ref": f"models:/{name}@champion", "model_name": served}
    )
    states = _states(dag_run)
    assert dag_run.state == "failed", states
    assert (states["deploy"], states["verify"], states["rollback"]) == (
        "failed",
        "upstream_failed",
        "skipped",
    )
    assert get_version("champion", name=name, tracking_uri=registry_env).version == "1"
