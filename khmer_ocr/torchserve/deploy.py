"""Deploying a model to a running TorchServe: register the new version next to the old one, warm it,
smoke-test it, make it the default, then unregister the old one. A failure at any step before the switch
unregisters the new version and leaves the old one serving."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from khmer_ocr.errors import DeployError, ServingError
from khmer_ocr.names import MODEL_NAME
from khmer_ocr.torchserve.archive import build_archive, resolve_model
from khmer_ocr.torchserve.client import TorchServeClient
from khmer_ocr.torchserve.requests import decode_image

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parents[1] / "assets"
SMOKE_IMAGE = ASSETS / "smoke-line.png"  # a test line of the project's own generator (unseen by training)
SMOKE_TEXT = ASSETS / "smoke-line.txt"
WARMUP_REQUESTS = 3


@dataclass
class DeployResult:
    model_name: str
    version: str
    previous: str | None  # the default version before, unregistered after the switch
    archive: Path
    smoke: dict = field(default_factory=dict)  # the smoke request's answer


def smoke_test(
    client: TorchServeClient,
    model_name: str,
    version: str,
    image: bytes,
    in_process: str,
    expect: str | None = None,
) -> dict:
    """Warm the version, then check its REST answer for image against in_process, the same model's answer
    in this process (and against expect, when given); raises DeployError with what differed."""
    for _ in range(WARMUP_REQUESTS):
        r = client.predict(model_name, image, version=version)
    if r.status != 200 or not isinstance(r.body, dict) or "text" not in r.body:
        raise DeployError(f"smoke test of {model_name} {version}: HTTP {r.status}: {r.body}")
    if r.body["text"] != in_process:
        raise DeployError(
            f"smoke test of {model_name} {version}: served {r.body['text']!r}, the same model in process "
            f"reads {in_process!r}"
        )
    if expect is not None and r.body["text"] != expect:
        raise DeployError(
            f"smoke test of {model_name} {version}: read {r.body['text']!r}, expected {expect!r}"
        )
    return r.body


def _keep_as_current(archive: Path, model_name: str) -> None:
    """Copy the served archive to <store>/<model_name>.mar (atomically), the file a restarted TorchServe
    (or a new replica) loads at start."""
    import os
    import shutil

    current = archive.with_name(f"{model_name}.mar")
    tmp = archive.with_name(f".{model_name}.mar.tmp")
    shutil.copyfile(archive, tmp)
    os.replace(tmp, current)


def deploy(
    model_ref: str | Path | None,
    client: TorchServeClient,
    model_store: str | Path,
    *,
    model_name: str = MODEL_NAME,
    smoke_image: bytes | None = None,
    smoke_expect: str | None = None,
    workers: int = 1,
    tracking_uri: str | None = None,
) -> DeployResult:
    """Serve model_ref as the default version of model_name on the TorchServe behind client.

    model_store must be the folder that TorchServe reads archives from (the archive is written there);
    tracking_uri: the MLflow registry of models:/ and runs:/ references.
    """
    from khmer_ocr.errors import ModelLoadError
    from khmer_ocr.inference import Recognizer

    resolved = resolve_model(model_ref, tracking_uri)
    image = smoke_image if smoke_image is not None else SMOKE_IMAGE.read_bytes()
    try:  # fail fast, before TorchServe is touched; its answer is what the served version must say
        in_process = (
            Recognizer.load(resolved.model_dir).predict([decode_image(image, "the smoke image")])[0].text
        )
    except ModelLoadError as exc:
        raise DeployError(f"{resolved.ref} cannot be loaded, nothing deployed: {exc}") from exc
    if not client.healthy():  # the service, not the model: a ServingError, worth a retry
        raise ServingError(f"TorchServe at {client.inference_url} is not healthy: nothing deployed")
    previous = client.default_version(model_name)
    existing = [str(v["modelVersion"]) for v in client.versions(model_name)]
    archive = build_archive(resolved, model_store, model_name=model_name)
    fresh = resolved.version not in existing
    if fresh:
        try:
            client.register(archive.name, model_name, initial_workers=workers)
        except ServingError as exc:
            raise DeployError(
                f"registering {archive.name} failed; {previous or 'nothing'} keeps serving: {exc}"
            ) from exc
    try:
        answer = smoke_test(client, model_name, resolved.version, image, in_process, smoke_expect)
    except (DeployError, ServingError) as exc:
        if fresh:
            try:
                client.unregister(model_name, resolved.version)
            except ServingError as cleanup:
                log.warning("could not unregister the failed version %s: %s", resolved.version, cleanup)
        raise DeployError(f"{exc}; version {previous or '(none)'} keeps serving") from exc
    client.set_default(model_name, resolved.version)
    _keep_as_current(archive, model_name)
    for version in existing:
        if version != resolved.version:
            client.unregister(model_name, version)
    log.info("deployed %s as %s version %s (was %s)", resolved.ref, model_name, resolved.version, previous)
    return DeployResult(model_name, resolved.version, previous, archive, answer)
