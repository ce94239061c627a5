"""The one resolver of model references: every kind of reference to a model folder becomes a local folder.

References (model_dir):
  None                          the committed reference model (khmer_ocr/assets/reference-model)
  a local folder                as it is
  s3://bucket/prefix            a model folder on S3, downloaded into the cache (checksums verified)
  models:/<name>@<alias>        a registered version, by alias, in the MLflow registry at tracking_uri
  models:/<name>/<version>      a registered version, by number
  models:/m-<logged model id>   a logged model (MLflow 3)
  runs:/<run_id>/<path>         a tracked run's artifacts (e.g. runs:/<run_id>/model)
The tracking URI is the argument, else resolved as khmer_ocr.mlflow_client.resolve_tracking_uri. Registry
downloads are cached by content: under <cache>/models/<name>-v<version>-<logged model or run id> (an alias is
resolved to its version first, so moving an alias is seen; run and model ids are random per tracking server,
so two registries' "v2" never share a cache entry), and the weights' SHA-256 recorded when the model was
logged (tag model_sha256 on the run and on the logged model) is checked on every cache hit and after every
download: a mismatch is downloaded again, then refused. Used by inference, training transfer, archives and
the registry; MLflow and boto3 are imported only for the references that need them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from khmer_ocr import storage
from khmer_ocr.cache import cache_dir
from khmer_ocr.errors import ModelLoadError
from khmer_ocr.model_folder import (
    CHARSET,
    LANGUAGE_MODEL,
    MODEL_YAML,
    REFERENCE_MODEL,
    WEIGHTS,
    missing_files,
)

SHA256_TAG = "model_sha256"  # the logged weights' checksum (a tag of the run and of the logged model)
REGISTRY_SCHEMES = ("models:/", "runs:/")

_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?$")
_RUNS = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+)$")


def safe_name(key: str) -> str:
    """key with every run of characters outside [A-Za-z0-9_.-] made one "_" (a file or metric name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._")[:200] or "model"


def model_dir(ref: str | Path | None, tracking_uri: str | None = None) -> Path:
    """The local model folder of a reference (see the module docstring), fetched into the cache when it is
    remote. ModelLoadError, naming the reference, when it does not exist, cannot be reached or downloaded,
    or (remote) holds no model folder; a local folder is returned as it is (load_model checks its files)."""
    if ref is None:
        return REFERENCE_MODEL
    ref_s = str(ref)
    if ref_s.startswith(REGISTRY_SCHEMES):
        return download_model(ref_s, tracking_uri)
    if storage.is_s3(ref_s):
        return _download_s3_model(ref_s)
    if not Path(ref_s).exists():
        raise ModelLoadError(f"model not found: {ref_s}")
    return Path(ref_s)


def registry_version(ref: str, tracking_uri: str | None = None) -> str | None:
    """The model version number a models:/<name>@<alias> or models:/<name>/<version> reference names
    now; None for other references."""
    m = _MODELS.match(ref)
    if not m or not (m["alias"] or m["version"]):
        return None
    from mlflow.exceptions import MlflowException

    from khmer_ocr.mlflow_client import client

    try:
        return _resolve(client(tracking_uri), ref).version
    except (MlflowException, OSError) as exc:  # requests' connection errors are OSErrors
        raise ModelLoadError(f"cannot resolve {ref}: {exc}") from exc


# ------------------------------------------------------------------------------------------------- S3
def _download_s3_model(uri: str) -> Path:
    """A model folder on S3, downloaded into the cache (checksums verified); kept per URI and weights."""
    try:
        names = set(storage.list_files(uri))
    except storage.StorageError as exc:
        raise ModelLoadError(f"cannot read model {uri}: {exc}") from exc
    if missing := missing_files(names):
        raise ModelLoadError(f"{uri} is not a model folder: missing {', '.join(missing)}")
    dest = cache_dir() / "models" / ("s3-" + hashlib.sha256(uri.encode()).hexdigest()[:16])
    try:
        for name in (WEIGHTS, MODEL_YAML, CHARSET):  # always fetched: the URI may hold a newer model
            storage.get_file(storage.join(uri, name), dest / name)
        if LANGUAGE_MODEL in names:
            storage.get_file(storage.join(uri, LANGUAGE_MODEL), dest / LANGUAGE_MODEL)
        else:
            (dest / LANGUAGE_MODEL).unlink(missing_ok=True)
    except storage.StorageError as exc:
        raise ModelLoadError(f"cannot download model {uri}: {exc}") from exc
    return dest


# --------------------------------------------------------------------------------------- MLflow registry
@dataclass(frozen=True)
class _Resolved:
    uri: str  # an immutable artifact URI
    key: str  # the cache entry's name: unique per logged model (or run) of one tracking server
    version: str | None  # the registry version, for models:/<name>@<alias> and models:/<name>/<version>
    sha256: str | None  # the weights' checksum recorded when the model was logged (None: not recorded)


def _recorded_sha256(client, run_id: str | None, model_id: str | None, source: str) -> str | None:
    """The model_sha256 tag of the logged model, else of the run when its model_uri is that source."""
    from mlflow.exceptions import MlflowException

    if model_id:
        try:
            if sha := (client.get_logged_model(model_id).tags or {}).get(SHA256_TAG):
                return sha
        except MlflowException:
            pass
    if run_id:
        tags = client.get_run(run_id).data.tags
        if tags.get(SHA256_TAG) and tags.get("model_uri", source) == source:
            return tags[SHA256_TAG]
    return None


def _resolve(client, ref: str) -> _Resolved:
    """Where ref's artifacts are, and what they must hold; MlflowException when it does not exist."""
    if m := _RUNS.match(ref):
        run = client.get_run(m["run_id"])
        logged = run.data.tags.get("model_uri", "")
        model_id = logged.removeprefix("models:/") if logged.startswith("models:/m-") else None
        sha = _recorded_sha256(client, m["run_id"], model_id, logged) if m["path"] == "model" else None
        return _Resolved(ref, f"run-{m['run_id']}-{m['path']}", None, sha)
    m = _MODELS.match(ref)
    if not m:
        raise ModelLoadError(
            f"unsupported model reference {ref!r}: use models:/<name>@<alias>, models:/<name>/<version>, "
            "models:/m-<id> or runs:/<run_id>/<path>"
        )
    name = m["name"]
    if m["alias"]:
        mv = client.get_model_version_by_alias(name, m["alias"])
    elif m["version"]:
        mv = client.get_model_version(name, m["version"])
    elif name.startswith("m-"):  # a logged model (MLflow 3), immutable
        client.get_logged_model(name)  # raises when there is none
        return _Resolved(ref, f"logged-{name}", None, _recorded_sha256(client, None, name, ref))
    else:
        raise ModelLoadError(
            f"{ref!r} names no version or alias: use models:/{name}@<alias> (stages are gone)"
        )
    source = mv.source or ""
    model_id = source.removeprefix("models:/") if source.startswith("models:/m-") else None
    origin = model_id or (f"run-{mv.run_id}" if mv.run_id else source)
    sha = _recorded_sha256(client, mv.run_id, model_id, source)
    key = f"{name}-v{mv.version}-{origin}"
    return _Resolved(f"models:/{name}/{mv.version}", key, str(mv.version), sha)


def _find_model_dir(root: Path) -> Path | None:
    """The folder holding model.safetensors under root (the logged pyfunc's `model_dir` artifact)."""
    if not root.is_dir():
        return None
    hits = sorted(root.rglob(WEIGHTS), key=lambda p: len(p.parts))
    return hits[0].parent if hits else None


def _verified(root: Path, sha256: str | None) -> Path | None:
    """The model folder under root if there is one and its weights have the recorded checksum."""
    found = _find_model_dir(root)
    if found is None or (sha256 and storage.sha256_file(found / WEIGHTS) != sha256):
        return None
    return found


def download_model(ref: str, tracking_uri: str | None = None) -> Path:
    """The local model folder for a registry or run reference (downloaded once, then cached).

    Raises ModelLoadError naming ref when the model, version, alias or run does not exist, the registry
    cannot be reached, or the artifacts hold no model folder.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from khmer_ocr.mlflow_client import client, fluent_tracking_uri, resolve_tracking_uri

    tracking_uri = resolve_tracking_uri(tracking_uri)
    try:
        resolved = _resolve(client(tracking_uri), ref)
    except MlflowException as exc:
        raise ModelLoadError(
            f"model {ref} not found in the registry at {tracking_uri}: {exc.message}"
        ) from exc
    except OSError as exc:  # requests' connection errors are OSErrors
        raise ModelLoadError(f"cannot reach the registry at {tracking_uri} for {ref}: {exc}") from exc
    uri, sha256 = resolved.uri, resolved.sha256
    dest = cache_dir() / "models" / safe_name(resolved.key)
    if (found := _verified(dest, sha256)) is not None:
        return found
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # models:/ URIs are read through MLflow's default registry, whatever registry_uri says: set it too
        with fluent_tracking_uri(tracking_uri):
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(tmp), tracking_uri=tracking_uri, registry_uri=tracking_uri
            )
        if (got := _find_model_dir(tmp)) is None:
            raise ModelLoadError(f"{ref} ({uri}) holds no model folder ({WEIGHTS} not found)")
        if sha256 and (actual := storage.sha256_file(got / WEIGHTS)) != sha256:
            raise ModelLoadError(
                f"{ref} ({uri}): the downloaded {WEIGHTS} has SHA-256 {actual}, not the {sha256} recorded "
                "when the model was logged: refused"
            )
        shutil.rmtree(dest, ignore_errors=True)  # a stale or damaged entry
        try:
            tmp.rename(dest)
        except OSError:  # another process cached it first
            if _verified(dest, sha256) is None:
                raise
    except MlflowException as exc:
        raise ModelLoadError(f"cannot download model {ref} ({uri}): {exc.message}") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot download model {ref} ({uri}): {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if (found := _verified(dest, sha256)) is None:
        raise ModelLoadError(f"{ref} ({uri}): the cached copy at {dest} changed while it was being read")
    return found
