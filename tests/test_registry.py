"""The registry workflow against a real `mlflow server`: register -> approve -> promote -> rollback, the
refusals with their reasons, and the audit tags. Models: the committed reference model (good) and a tiny
model trained for a few steps (bad), both tracked as real runs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from khmer_ocr import registry
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.errors import PromotionRefused, RegistryError
from khmer_ocr.model_folder import REFERENCE_MODEL
from khmer_ocr.tracking import log_model_folder
from khmer_ocr.training.phases import train_config

NAME = "khmer-ocr-registry-test"
_TINY = ["model.size=tiny", "optim.batch_size=8", "optim.epochs=1", "max_steps_per_epoch=2"]


@pytest.fixture(scope="module")
def world(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A clean level-1 dataset, a run holding the reference model, a run holding a barely trained model,
    and a permissive gate set (the milestones are too strict for a model trained for two steps)."""
    root = tmp_path_factory.mktemp("registry")
    cfg = DataConfig(name="r", num_samples=240, shard_size=120, seed=11, difficulty={1: 1.0})
    generate_dataset(cfg, root / "ds", workers=1, progress=False)
    good = log_model_folder(REFERENCE_MODEL, tracking_uri=mlflow_server, run_name="reference")
    bad = train_config(
        "production_fast", str(root / "ds"), root / "run", overrides=_TINY, progress=False,
        tracking_uri=mlflow_server,
    ).run_id  # fmt: skip
    gates = root / "open-gates.yaml"
    gates.write_text(
        "gates:\n  - {name: any_output, metric: char_accuracy, op: '>=', threshold: 0.0}\n", encoding="utf-8"
    )
    return {"data": str(root / "ds"), "good": good, "bad": bad, "open_gates": str(gates)}


def test_register_approve_promote_rollback(world: dict, mlflow_env: str) -> None:
    data, open_gates = world["data"], world["open_gates"]

    # A version that fails the milestone gates: registered and tagged, but not a candidate, never promoted.
    failing = registry.register(world["bad"], data=data, name=NAME)
    assert not failing.gates_passed and registry.CANDIDATE not in failing.aliases
    assert failing.tags["gate.milestone_3_char_acc_85"].startswith("FAIL")
    assert failing.tags["approval"] == "pending" and failing.tags["registered_by"] == "khmer-ocr"
    assert failing.tags["eval_dataset"] == data and failing.tags["config"] == "production_fast"
    assert float(failing.tags["metric.char_accuracy"]) < 0.5
    registry.approve(failing.version, by="alice", name=NAME)
    with pytest.raises(PromotionRefused, match=r"fails its gates: gate\.milestone_1"):
        registry.promote(failing.version, by="alice", name=NAME)

    # The reference model under an open gate set: candidate; refused until approved with a name.
    good = registry.register(world["good"], data=data, gates=open_gates, name=NAME)
    assert good.gates_passed and good.aliases == [registry.CANDIDATE]
    assert float(good.tags["metric.char_accuracy"]) > 0.8
    with pytest.raises(PromotionRefused, match="pending, not approved"):
        registry.promote(good.version, by="bob", name=NAME)
    from mlflow import MlflowClient

    MlflowClient().set_model_version_tag(NAME, good.version, "approval", "approved")  # as in the UI...
    assert registry.approval_status(good.version, name=NAME) == "pending"  # ...but nobody signed it
    registry.approve(good.version, by="bob", reason="read the card", name=NAME)
    assert registry.approval_status(good.version, name=NAME) == "approved"
    champion = registry.promote(good.version, by="bob", name=NAME)
    assert champion.aliases == [registry.CHAMPION]  # candidate moved on
    assert champion.tags["promoted_by"] == "bob" and champion.tags["comparison"] == "first champion"
    with pytest.raises(PromotionRefused, match="already the champion"):
        registry.promote(good.version, by="bob", name=NAME)

    # The bad model, now passing the open gates and approved, is worse than the champion on the same data.
    worse = registry.register(world["bad"], data=data, gates=open_gates, name=NAME)
    assert worse.gates_passed and registry.CANDIDATE in worse.aliases
    registry.approve(worse.version, by="carol", name=NAME)
    with pytest.raises(PromotionRefused, match=rf"champion v{good.version} .* on the same data"):
        registry.promote(worse.version, by="carol", name=NAME)

    # The reference model again (same data, same score): at least as good, so it can take over.
    again = registry.register(world["good"], name=NAME)  # reuses the evaluation attached to the run
    assert again.tags["eval_dataset_version"] == good.tags["eval_dataset_version"]
    registry.approve(again.version, by="dave", name=NAME)
    promoted = registry.promote(again.version, by="dave", reason="re-registered", name=NAME)
    assert registry.get_version(registry.CHAMPION, name=NAME).version == promoted.version
    assert registry.get_version(registry.PREVIOUS, name=NAME).version == good.version
    assert registry.get_version(good.version, name=NAME).tags["superseded_by"] == again.version

    restored = registry.rollback(by="erin", reason="pager went off", name=NAME)
    assert restored.version == good.version and registry.CHAMPION in restored.aliases
    assert registry.get_version(registry.PREVIOUS, name=NAME) is None  # nothing older to fall back to
    rolled = registry.get_version(again.version, name=NAME)
    assert rolled.tags["rolled_back_by"] == "erin" and rolled.tags["rolled_back_reason"] == "pager went off"
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(by="erin", name=NAME)

    # Rejection removes the candidate alias; every action is an event on the registered model.
    registry.reject(worse.version, by="frank", reason="worse than champion", name=NAME)
    assert registry.get_version(registry.CANDIDATE, name=NAME) is None
    assert registry.approval_status(worse.version, name=NAME) == "rejected"
    events = [
        json.loads(v)
        for k, v in MlflowClient().get_registered_model(NAME).tags.items()
        if k.startswith("event.")
    ]
    actions = {(e["action"], e["version"], e["by"]) for e in events}
    assert ("promoted", again.version, "dave") in actions and (
        "rolled_back",
        again.version,
        "erin",
    ) in actions
    assert ("rejected", worse.version, "frank") in actions


def test_clear_errors(world: dict, mlflow_env: str) -> None:
    with pytest.raises(RegistryError, match="run nope not found"):
        registry.register("nope", name=NAME)
    fresh = log_model_folder(REFERENCE_MODEL, run_name="unevaluated")
    with pytest.raises(RegistryError, match="has no evaluation: give the dataset"):
        registry.register(fresh, name=NAME)
    with pytest.raises(RegistryError, match="version 999 not found"):
        registry.approve(999, by="x", name=NAME)
    with pytest.raises(RegistryError, match="say who is acting"):
        registry.approve(1, by=" ", name=NAME)
    with pytest.raises(RegistryError, match="give a reason"):
        registry.reject(1, by="x", reason="", name=NAME)
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        log_model_folder(Path(world["data"]))


def test_cli_on_a_local_store(world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The same workflow from the command line, on a local SQLite store instead of a server."""
    from khmer_ocr.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the default store: ./mlflow.db
    args = ["--data", world["data"], "--gates", world["open_gates"]]
    assert main(["register", "--model", str(REFERENCE_MODEL), *args, "--by", "ci"]) == 0
    assert (tmp_path / "mlflow.db").is_file()
    assert main(["promote", "1", "--by", "ci"]) == 1  # refused: not approved
    assert main(["approve", "1", "--by", "ci"]) == 0
    assert main(["promote", "1", "--by", "ci"]) == 0
    assert main(["rollback", "--by", "ci"]) == 2  # nothing to roll back to: a clear error
    capsys.readouterr()
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["aliases"], v["approval"], v["gates_passed"]) for v in listed] == [
        ("1", ["champion"], "approved", True)
    ]
    assert listed[0]["uri"] == "models:/khmer-ocr/1" and listed[0]["tags"]["approved_by"] == "ci"
    assert float(listed[0]["tags"]["metric.char_accuracy"]) > 0.8  # the reference model, evaluated
    versions = registry.list_versions()
    assert [(v.version, v.aliases, v.approval) for v in versions] == [("1", ["champion"], "approved")]


def test_forged_tags_never_promote(world: dict, mlflow_env: str, tmp_path: Path) -> None:
    """Gate results and metrics come from the evaluation logged to the version's run, not from tags that
    anyone who can edit the registered model can change (the MLflow UI is where approvers add tags)."""
    from mlflow import MlflowClient

    client, name = MlflowClient(), f"{NAME}-forged"
    data, open_gates = world["data"], world["open_gates"]

    # A version failing the milestone gates, its tags edited to say it passes, approved by "  ".
    failing = registry.register(world["bad"], data=data, name=name)
    forged = {"gates_passed": "true", "metric.char_accuracy": "0.999", "approval": "approved"}
    for key, value in {**forged, "approved_by": "  "}.items():
        client.set_model_version_tag(name, failing.version, key, value)
    assert registry.get_version(failing.version, name=name).gates_passed  # what the tags say (display)
    assert registry.approval_status(failing.version, name=name) == "pending"  # a blank name signs nothing
    with pytest.raises(PromotionRefused, match="pending, not approved"):
        registry.promote(failing.version, by="mallory", name=name)
    client.set_model_version_tag(name, failing.version, "approved_by", "mallory")
    with pytest.raises(PromotionRefused, match=r"fails its gates: gate\.milestone_1"):
        registry.promote(failing.version, by="mallory", name=name)
    assert registry.get_version(registry.CHAMPION, name=name) is None

    # A champion, then a worse version whose tags claim 99.9 %: compared on what the runs logged.
    good = registry.register(world["good"], data=data, gates=open_gates, name=name)
    registry.approve(good.version, by="bob", name=name)
    registry.promote(good.version, by="bob", name=name)
    worse = registry.register(world["bad"], data=data, gates=open_gates, name=name)
    for key, value in forged.items():
        client.set_model_version_tag(name, worse.version, key, value)
    client.set_model_version_tag(name, good.version, "metric.char_accuracy", "0.001")
    registry.approve(worse.version, by="mallory", name=name)
    with pytest.raises(PromotionRefused, match=rf"champion v{good.version} .* on the same data"):
        registry.promote(worse.version, by="mallory", name=name)

    # The run's evaluation artifact replaced by one claiming 99.9 %: it no longer matches the run's metrics.
    report = registry.run_evaluation(world["bad"])
    assert report is not None
    report.splits[report.primary_split]["char_accuracy"] = 0.999
    (tmp_path / "evaluation").mkdir()
    report.write(tmp_path / "evaluation" / "evaluation.json")
    client.log_artifacts(world["bad"], str(tmp_path / "evaluation"), "evaluation")
    with pytest.raises(PromotionRefused, match=r"inconsistent .*eval_test_char_accuracy"):
        registry.promote(worse.version, by="mallory", name=name)
    assert registry.get_version(registry.CHAMPION, name=name).version == good.version


def test_cli_with_tracking_uri_option_only(
    world: dict, mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """--tracking-uri alone (no MLFLOW_TRACKING_URI): everything happens on that server, no ./mlflow.db."""
    from khmer_ocr.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    name = f"{NAME}-uri-option"
    where = ["--tracking-uri", mlflow_server, "--name", name, "--by", "ci"]
    args = ["--data", world["data"], "--gates", world["open_gates"], *where]
    assert main(["register", "--model", str(REFERENCE_MODEL), *args]) == 0
    assert main(["approve", "1", *where]) == 0
    capsys.readouterr()
    assert main(["promote", "1", *where]) == 0
    # moving the alias from a shell triggers no DAG: the CLI says how to deploy (README: khmer_ocr_deploy)
    assert "deploy the new champion with `khmer-ocr deploy` or by triggering" in capsys.readouterr().out
    assert not (tmp_path / "mlflow.db").exists()
    champion = registry.get_version(registry.CHAMPION, name=name, tracking_uri=mlflow_server)
    assert champion is not None and champion.version == "1"


ROOT = Path(__file__).resolve().parents[1]
_AUTH = {"admin": "admin-pw-0123", "pipeline": "pipeline-pw-0123", "approver": "approver-pw-0123"}


def _as(monkeypatch: pytest.MonkeyPatch, user: str | None, password: str | None = None) -> None:
    for key, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)


def test_mlflow_basic_auth_who_can_do_what(
    world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production MLflow set-up (infra/mlflow: basic-auth app, accounts and roles from setup_auth.py) on
    a real server: only approvers approve; the pipeline registers and promotes approved versions; others
    read; nobody anonymous."""
    import subprocess
    import sys

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    from tests.conftest import running_mlflow

    ini = (ROOT / "infra" / "mlflow" / "basic_auth.ini").read_text()
    assert "default_permission = READ" in ini and "postgresql+psycopg2://mlflow@postgres" in ini
    (tmp_path / "basic_auth.ini").write_text(
        "\n".join(
            f"database_uri = sqlite:///{tmp_path / 'auth.db'}" if ln.startswith("database_uri") else ln
            for ln in ini.splitlines()
        )
    )
    server_env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": _AUTH["admin"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
    }
    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with running_mlflow(
        tmp_path, str(tmp_path / "artifacts"), server_env, ("--app-name", "basic-auth")
    ) as url:
        setup_env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": _AUTH["admin"],
            "KHMER_OCR_MLFLOW_PIPELINE_PASSWORD": _AUTH["pipeline"],
            "KHMER_OCR_MLFLOW_APPROVER_PASSWORD": _AUTH["approver"],
        }
        script = [sys.executable, str(ROOT / "infra" / "mlflow" / "setup_auth.py")]
        for _ in range(2):  # safe to run again
            done = subprocess.run(script, env=setup_env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
        _as(monkeypatch, "admin", _AUTH["admin"])
        AuthServiceClient(url).create_user("reader", "reader-pw-0123")

        _as(monkeypatch, None)  # anonymous: nothing
        with pytest.raises(MlflowException, match="401"):
            MlflowClient(url).search_experiments()

        # The pipeline tracks, registers (candidate), but cannot approve.
        _as(monkeypatch, "pipeline", _AUTH["pipeline"])
        run_id = log_model_folder(REFERENCE_MODEL, tracking_uri=url, run_name="reference")
        where = {"name": "khmer-ocr", "tracking_uri": url}
        first = registry.register(
            run_id, data=world["data"], gates=world["open_gates"], by="airflow", **where
        )
        assert first.aliases == [registry.CANDIDATE] and first.tags["registered_by"] == "airflow"
        with pytest.raises(RegistryError, match="may not approve"):
            registry.approve(first.version, by="airflow", **where)
        with pytest.raises(MlflowException, match="403"):
            MlflowClient(url, registry_uri=url).set_model_version_tag(
                "khmer-ocr", first.version, "approval", "approved"
            )
        with pytest.raises(PromotionRefused, match="pending, not approved"):
            registry.promote(first.version, by="airflow", **where)

        # Someone with an account but no role reads, and can neither approve nor move an alias.
        _as(monkeypatch, "reader", "reader-pw-0123")
        assert registry.get_version(first.version, **where).aliases == [registry.CANDIDATE]
        with pytest.raises(RegistryError, match="may not approve"):
            registry.approve(first.version, by="reader", **where)
        with pytest.raises(MlflowException, match="403"):
            MlflowClient(url, registry_uri=url).set_registered_model_alias(
                "khmer-ocr", "champion", first.version
            )

        # An approver approves and promotes; later the pipeline promotes a version an approver approved.
        _as(monkeypatch, "approver", _AUTH["approver"])
        registry.approve(first.version, by="alice", **where)
        assert registry.promote(first.version, by="alice", **where).aliases == [registry.CHAMPION]
        _as(monkeypatch, "pipeline", _AUTH["pipeline"])
        second = registry.register(run_id, by="airflow", **where)  # reuses the run's evaluation
        _as(monkeypatch, "approver", _AUTH["approver"])
        registry.approve(second.version, by="alice", **where)
        _as(monkeypatch, "pipeline", _AUTH["pipeline"])
        promoted = registry.promote(second.version, by="airflow", **where)  # the promotion DAG's step
        assert registry.CHAMPION in promoted.aliases
        assert registry.get_version(registry.PREVIOUS, **where).version == first.version
        assert (
            registry.get_version(second.version, **where).tags.get("promoted_by") is None
        )  # not its to write
        events = MlflowClient(url, registry_uri=url).get_registered_model("khmer-ocr").tags
        assert any(k.startswith("event.") and k.endswith(f".promoted.v{second.version}") for k in events)


# ------------------------------------------------------------------------ decisions, scores, history
def _open(world: dict, name: str, data: str | None = None, run: str | None = None):
    """A version of the reference model (a run of its own unless run is given) under the open gate set."""
    run_id = run or log_model_folder(REFERENCE_MODEL, run_name="reference")
    return registry.register(run_id, data=data or world["data"], gates=world["open_gates"], name=name)


def test_arguments_are_checked_before_anything_is_written(world: dict, mlflow_env: str) -> None:
    """A blank `by` (or reason) refuses the action and leaves the version exactly as it was."""
    name = f"{NAME}-checks"
    version = _open(world, name, run=world["good"]).version
    before = registry.get_version(version, name=name)
    for action in (
        lambda: registry.reject(version, by=" ", reason="blurry", name=name),
        lambda: registry.reject(version, by="carol", reason=" ", name=name),
        lambda: registry.approve(version, by="", name=name),
    ):
        with pytest.raises(RegistryError, match=r"say who is acting|give a reason"):
            action()
    after = registry.get_version(version, name=name)
    assert after.approval == "pending" and after.aliases == before.aliases == [registry.CANDIDATE]
    assert after.tags == before.tags  # no approval, *_by or *_at tag written


def test_a_rejection_stands_and_the_champion_cannot_be_rejected(world: dict, mlflow_env: str) -> None:
    name = f"{NAME}-rejections"
    first = _open(world, name, run=world["good"]).version
    registry.approve(first, by="alice", name=name)
    registry.promote(first, by="alice", name=name)
    with pytest.raises(RegistryError, match=f"version {first} is the champion: roll back"):
        registry.reject(first, by="bob", reason="changed my mind", name=name)
    assert registry.approval_status(first, name=name) == "approved"
    assert registry.get_version(registry.CHAMPION, name=name).version == first

    # Rejected, then someone approves: the rejection stands (a new decision takes a new version).
    second = registry.register(world["good"], name=name).version
    registry.reject(second, by="carol", reason="blurry card", name=name)
    with pytest.raises(RegistryError, match=r"rejected by carol \(blurry card\): a rejection stands"):
        registry.approve(second, by="dave", reason="looks fine to me", name=name)
    assert registry.approval_status(second, name=name) == "rejected"
    assert "approved_by" not in registry.get_version(second, name=name).tags
    with pytest.raises(PromotionRefused, match=f"version {second} is rejected, not approved"):
        registry.promote(second, by="dave", name=name)
    third = registry.register(world["good"], name=name).version  # the same run again: a fresh decision
    registry.approve(third, by="dave", name=name)
    assert registry.promote(third, by="dave", name=name).aliases == [registry.CHAMPION]


def test_rollback_walks_back_through_the_champion_history(world: dict, mlflow_env: str) -> None:
    name = f"{NAME}-history"
    versions = []
    for i in range(3):  # the same run each time: equal scores, so each promotion is "at least as good"
        v = _open(world, name, run=world["good"]) if i == 0 else registry.register(world["good"], name=name)
        registry.approve(v.version, by="alice", name=name)
        registry.promote(v.version, by="alice", name=name)
        versions.append(v.version)

    def aliases() -> tuple[str | None, str | None]:
        champion = registry.get_version(registry.CHAMPION, name=name)
        previous = registry.get_version(registry.PREVIOUS, name=name)
        return (champion and champion.version, previous and previous.version)

    assert aliases() == (versions[2], versions[1])
    assert registry.rollback(by="oncall", reason="one", name=name).version == versions[1]
    assert aliases() == (versions[1], versions[0])
    assert registry.rollback(by="oncall", reason="two", name=name).version == versions[0]
    assert aliases() == (versions[0], None)
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(by="oncall", name=name)
    from mlflow import MlflowClient

    tags = MlflowClient().get_registered_model(name).tags
    assert json.loads(tags[registry.CHAMPION_HISTORY]) == [versions[0]]
    assert registry.get_version(versions[2], name=name).tags["rolled_back_reason"] == "one"


def test_the_champion_is_scored_on_the_candidates_data(world: dict, mlflow_env: str, tmp_path: Path) -> None:
    """The champion's score on the candidate's evaluation data: its own registered evaluation when that is
    the same data, else a comparison logged earlier to its run, else an evaluation run now (and logged);
    a dataset that is gone refuses the promotion with the reason."""
    name = f"{NAME}-scores"
    other = str(tmp_path / "other")
    cfg = DataConfig(name="o", num_samples=120, shard_size=120, seed=12, difficulty={1: 1.0})
    generate_dataset(cfg, other, workers=1, progress=False)

    a = _open(world, name).version  # evaluated on the world's data
    registry.approve(a, by="alice", name=name)
    registry.promote(a, by="alice", name=name)
    b = _open(world, name, data=other).version  # on other data: the champion is evaluated there now
    registry.approve(b, by="alice", name=name)
    note = registry.promote(b, by="alice", name=name).tags["comparison"]
    assert f"champion v{a} " in note and f"(evaluated now on {other})" in note, note
    c = _open(world, name, data=other).version  # the champion (b) was evaluated on this very data
    registry.approve(c, by="alice", name=name)
    note = registry.promote(c, by="alice", name=name).tags["comparison"]
    assert f"champion v{b} " in note and "(its registered evaluation)" in note, note
    registry.rollback(by="alice", name=name)
    registry.rollback(by="alice", name=name)  # a is the champion again: its run holds the comparison
    assert registry.get_version(registry.CHAMPION, name=name).version == a
    d = _open(world, name, data=other).version
    registry.approve(d, by="alice", name=name)
    note = registry.promote(d, by="alice", name=name).tags["comparison"]
    assert f"champion v{a} " in note and "(an earlier comparison)" in note, note

    gone = str(tmp_path / "gone")
    generate_dataset(dataclasses.replace(cfg, seed=13), gone, workers=1, progress=False)
    e = _open(world, name, data=gone).version
    registry.approve(e, by="alice", name=name)
    import shutil

    shutil.rmtree(gone)
    with pytest.raises(PromotionRefused, match=rf"cannot evaluate champion v{d} on {gone} to compare"):
        registry.promote(e, by="alice", name=name)
    assert registry.get_version(registry.CHAMPION, name=name).version == d


def test_model_downloads_are_cached_by_content_not_by_version_number(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two registries, each with its own v1 of the same model name, one download cache: each serves its
    own weights; a damaged cache entry is downloaded again; weights that do not match the checksum
    recorded at logging are refused."""
    from mlflow import MlflowClient

    from khmer_ocr.errors import ModelLoadError
    from khmer_ocr.inference import load_model, save_model
    from khmer_ocr.model_folder import WEIGHTS
    from khmer_ocr.model_store import download_model
    from tests.conftest import running_mlflow

    def file_sha256(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    model, cfg, charset = load_model(REFERENCE_MODEL)
    other_model = save_model(model, cfg, charset, tmp_path / "fp16", half=True)  # other weights, same shape
    name = f"{NAME}-cache"

    def publish(url: str, folder: Path) -> str:
        run_id = log_model_folder(folder, tracking_uri=url)
        client = MlflowClient(url, registry_uri=url)
        client.create_registered_model(name)
        source = client.get_run(run_id).data.tags["model_uri"]
        model_id = source.removeprefix("models:/")
        return client.create_model_version(name, source, run_id=run_id, model_id=model_id).version

    assert publish(mlflow_server, REFERENCE_MODEL) == "1"
    (tmp_path / "second").mkdir()
    with running_mlflow(tmp_path / "second", str(tmp_path / "second" / "artifacts")) as second:
        assert publish(second, other_model) == "1"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        first = download_model(f"models:/{name}/1")
        assert file_sha256(first / WEIGHTS) == file_sha256(REFERENCE_MODEL / WEIGHTS)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", second)
        got = download_model(f"models:/{name}/1")
        assert got != first and file_sha256(got / WEIGHTS) == file_sha256(other_model / WEIGHTS)

        (got / WEIGHTS).write_bytes(b"damaged")  # a damaged cache entry: downloaded again
        again = download_model(f"models:/{name}/1")
        assert file_sha256(again / WEIGHTS) == file_sha256(other_model / WEIGHTS)

        client = MlflowClient(second, registry_uri=second)
        model_id = client.get_model_version(name, "1").source.removeprefix("models:/")
        client.set_logged_model_tags(model_id, {"model_sha256": "0" * 64})  # what was logged: not this
        with pytest.raises(ModelLoadError, match=f"has SHA-256 {file_sha256(other_model / WEIGHTS)}, not"):
            download_model(f"models:/{name}/1")
