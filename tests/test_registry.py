"""The registry workflow against a real `mlflow server`: register -> approve -> promote -> rollback, the
refusals with their reasons, and the audit tags. Models: the committed reference model (good) and a tiny
model trained for a few steps (bad), both tracked as real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from khmer_ocr import registry
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.dataset import generate_dataset
from khmer_ocr.inference import REFERENCE_MODEL
from khmer_ocr.registry import PromotionRefused, RegistryError
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


def test_cli_on_a_local_store(world: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    assert main(["models", "--json"]) == 0
    versions = registry.list_versions()
    assert [(v.version, v.aliases, v.approval) for v in versions] == [("1", ["champion"], "approved")]
