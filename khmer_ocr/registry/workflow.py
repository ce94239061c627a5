"""The release workflow: register, approve / reject, promote, rollback (see khmer_ocr.registry)."""

from __future__ import annotations

import json

from khmer_ocr.errors import PromotionRefused, RegistryError
from khmer_ocr.mlflow_client import client as mlflow_client
from khmer_ocr.names import MODEL_NAME
from khmer_ocr.registry.evidence import (
    champion_score,
    evidence,
    log_evaluation,
    run_evaluation,
    version_tags,
)
from khmer_ocr.registry.versions import (
    APPROVED,
    CANDIDATE,
    CHAMPION,
    CHAMPION_HISTORY,
    PREVIOUS,
    REJECTED,
    VersionInfo,
    action_tags,
    approval_of,
    champion_history,
    denied,
    get_version,
    read_version,
    record,
    set_approval,
)


def register(
    run_id: str,
    *,
    data: str | None = None,
    gates: str = "milestones",
    page_data: str | None = None,
    by: str = "khmer-ocr",
    name: str = MODEL_NAME,
    tracking_uri: str | None = None,
) -> VersionInfo:
    """Register a tracked run's model as a new version; alias `candidate` when it passes its gates.

    With data, the run's model is evaluated on it now (gate set `gates`; and on the pages of the page
    dataset page_data, not gated) and the report is attached to the run; without, the report an earlier
    log_evaluation attached is used. The version's tags record the line finder it reads pages with.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise RegistryError(f"run {run_id} not found at {client.tracking_uri}: {exc.message}") from exc
    model_uri = run.data.tags.get("model_uri")
    if not model_uri:
        raise RegistryError(f"run {run_id} logged no model (no model_uri tag): was the training finished?")
    if data is not None:
        from khmer_ocr.evaluation.evaluate import evaluate

        model = f"runs:/{run_id}/model"
        report = evaluate(model, data, gates=gates, tracking_uri=client.tracking_uri, page_data=page_data)
        log_evaluation(run_id, report, client.tracking_uri)
    elif (report := run_evaluation(run_id, client.tracking_uri)) is None:
        raise RegistryError(
            f"run {run_id} has no evaluation: give the dataset to evaluate it on (--data DATASET)"
        )
    try:
        client.get_registered_model(name)
        new_model = False
    except MlflowException:
        new_model = True  # register_model creates it (and says so, not "already exists")
    import mlflow

    from khmer_ocr.mlflow_client import fluent_tracking_uri

    registered = action_tags("registered", by, f"run {run_id}", run_id=run_id)
    tags = {**version_tags(run, report), **registered}  # set at creation: any account that registers can
    with fluent_tracking_uri(client.tracking_uri):
        mv = mlflow.register_model(model_uri, name, tags=tags)
    if new_model:
        client.update_registered_model(
            name, description="Khmer text-line recognizer. Aliases: candidate, champion, previous."
        )
    version = str(mv.version)
    record(client, name, version, "registered", by, f"run {run_id}", on_version=False, run_id=run_id)
    if report.passed:
        client.set_registered_model_alias(name, CANDIDATE, version)
        record(client, name, version, "candidate", by, "passes its gates")
    return read_version(client, name, version)


def approve(
    version: str | int, by: str, reason: str = "", *, name: str = MODEL_NAME, tracking_uri: str | None = None
) -> VersionInfo:
    """A person approves a version for promotion (tags approval=approved, approved_by, approved_at).

    A rejected version stays rejected (RegistryError): a rejection is a decision about that version, and a
    new decision takes a new version (register the run again)."""
    action_tags("approved", by)  # every argument checked before anything is written
    client = mlflow_client(tracking_uri)
    info = read_version(client, name, version)
    if approval_of(info) == REJECTED:
        who, why = info.tags.get("rejected_by", "someone"), info.tags.get("rejected_reason", "")
        raise RegistryError(
            f"version {info.version} was rejected by {who}" + (f" ({why})" if why else "") + ": a rejection "
            f"stands; register its run again (khmer-ocr register --run {info.run_id or 'RUN_ID'}) for a new "
            "decision"
        )
    set_approval(client, name, info.version, APPROVED)
    record(client, name, info.version, "approved", by, reason)
    return read_version(client, name, info.version)


def reject(
    version: str | int, by: str, reason: str, *, name: str = MODEL_NAME, tracking_uri: str | None = None
) -> VersionInfo:
    """A person rejects a version (tags approval=rejected, rejected_by, rejected_reason); it loses
    `candidate`."""
    if not reason.strip():
        raise RegistryError("reject: give a reason")
    action_tags("rejected", by)  # every argument checked before anything is written
    client = mlflow_client(tracking_uri)
    info = read_version(client, name, version)
    if CHAMPION in info.aliases:
        raise RegistryError(f"version {info.version} is the champion: roll back or promote another first")
    set_approval(client, name, info.version, REJECTED)
    record(client, name, info.version, "rejected", by, reason)
    if CANDIDATE in info.aliases:
        client.delete_registered_model_alias(name, CANDIDATE)
    return read_version(client, name, info.version)


def promote(
    version: str | int,
    by: str,
    reason: str = "",
    *,
    name: str = MODEL_NAME,
    tracking_uri: str | None = None,
) -> VersionInfo:
    """Move `champion` to version; the old champion keeps `previous`. Raises PromotionRefused with the
    reason unless the version is approved (approval=approved with a non-blank approved_by), passes its
    gates and is at least as good as the champion, both judged from the evaluation logged to its run."""
    client = mlflow_client(tracking_uri)
    info = read_version(client, name, version)
    status = approval_of(info)
    if status != APPROVED:
        raise PromotionRefused(
            f"version {info.version} is {status}, not approved: approve it in the MLflow UI (tags "
            f"approval=approved and approved_by=<you>) or run `khmer-ocr approve {info.version} --by NAME`"
        )
    ours = evidence(client, info)
    if not ours.gates_passed:
        failed = ", ".join(ours.failed_gates) or "no gates were checked"
        raise PromotionRefused(
            f"version {info.version} fails its gates: {failed} (gate set {ours.report.gate_set}, "
            f"evaluation logged to run {ours.run_id})"
        )
    champion = get_version(CHAMPION, name=name, tracking_uri=client.tracking_uri)
    if champion is not None and champion.version == info.version:
        raise PromotionRefused(f"version {info.version} is already the champion")
    note = "first champion"
    if champion is not None:
        theirs, how = champion_score(client, champion, ours)
        if ours.char_accuracy < theirs:
            raise PromotionRefused(
                f"version {info.version} reads {ours.char_accuracy:.2%} of characters, champion "
                f"v{champion.version} {theirs:.2%} on the same data ({how}): not promoted"
            )
        note = f"{ours.char_accuracy:.2%} vs champion v{champion.version} {theirs:.2%} ({how})"
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        record(client, name, champion.version, "superseded", by, reason, superseded_by=info.version)
    client.set_registered_model_alias(name, CHAMPION, info.version)
    history = [v for v in champion_history(client, name) if v != info.version] + [info.version]
    client.set_registered_model_tag(name, CHAMPION_HISTORY, json.dumps(history))
    if CANDIDATE in info.aliases:
        from mlflow.exceptions import MlflowException

        try:
            client.delete_registered_model_alias(name, CANDIDATE)
        except MlflowException as exc:  # deleting an alias takes MANAGE: the pipeline's account has EDIT
            if not denied(exc):
                raise  # (the next registration moves `candidate` anyway)
    record(client, name, info.version, "promoted", by, reason or note, comparison=note)
    return read_version(client, name, info.version)


def rollback(
    by: str, reason: str = "", *, name: str = MODEL_NAME, tracking_uri: str | None = None
) -> VersionInfo:
    """Move `champion` back to `previous` (and `previous` one further back, if there is one)."""
    client = mlflow_client(tracking_uri)
    previous = get_version(PREVIOUS, name=name, tracking_uri=client.tracking_uri)
    champion = get_version(CHAMPION, name=name, tracking_uri=client.tracking_uri)
    if previous is None or champion is None:
        raise RegistryError(f"model {name} has no previous champion to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    history = [v for v in champion_history(client, name) if v != champion.version]
    client.set_registered_model_tag(name, CHAMPION_HISTORY, json.dumps(history))
    earlier = [v for v in history if v != previous.version]
    if earlier:
        client.set_registered_model_alias(name, PREVIOUS, earlier[-1])
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    record(client, name, champion.version, "rolled_back", by, reason, replaced_by=previous.version)
    record(client, name, previous.version, "restored", by, reason, replacing=champion.version)
    return read_version(client, name, previous.version)
