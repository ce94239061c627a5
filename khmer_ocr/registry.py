"""The MLflow model registry, as the rest of khmer-ocr needs it: turn a model reference into a local model
folder (model.safetensors + model.yaml + charset.json).

References: `models:/<name>@<alias>`, `models:/<name>/<version>`, `models:/m-<logged model id>` and
`runs:/<run_id>/<path>` (e.g. runs:/<run_id>/model). The tracking/registry URI comes from
MLFLOW_TRACKING_URI (else the same local default as khmer_ocr.tracking). Downloads are cached under
<cache>/models/<name>-v<version> (an alias is resolved to its version first, so moving an alias is seen).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from khmer_ocr.data.sources import cache_dir
from khmer_ocr.inference import WEIGHTS, ModelLoadError

_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?$")
_RUNS = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+)$")


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._")[:200] or "model"


def _find_model_dir(root: Path) -> Path | None:
    """The folder holding model.safetensors under root (the logged pyfunc's `model_dir` artifact)."""
    if not root.is_dir():
        return None
    hits = sorted(root.rglob(WEIGHTS), key=lambda p: len(p.parts))
    return hits[0].parent if hits else None


def _resolve(client, ref: str) -> tuple[str, str]:
    """(an immutable artifact URI, a cache key) for ref; MlflowException when it does not exist."""
    if m := _RUNS.match(ref):
        client.get_run(m["run_id"])
        return ref, f"run-{m['run_id']}-{m['path']}"
    m = _MODELS.match(ref)
    if not m:
        raise ModelLoadError(
            f"unsupported model reference {ref!r}: use models:/<name>@<alias>, models:/<name>/<version>, "
            "models:/m-<id> or runs:/<run_id>/<path>"
        )
    name = m["name"]
    if m["alias"]:
        version = client.get_model_version_by_alias(name, m["alias"]).version
    elif m["version"]:
        version = client.get_model_version(name, m["version"]).version
    elif name.startswith("m-"):  # a logged model (MLflow 3), immutable
        client.get_logged_model(name)
        return ref, f"logged-{name}"
    else:
        raise ModelLoadError(
            f"{ref!r} names no version or alias: use models:/{name}@<alias> (stages are gone)"
        )
    return f"models:/{name}/{version}", f"{name}-v{version}"


def download_model(ref: str) -> Path:
    """The local model folder for a registry or run reference (downloaded once, then cached).

    Raises ModelLoadError naming ref when the model, version, alias or run does not exist, the registry
    cannot be reached, or the artifacts hold no model folder.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from khmer_ocr.tracking import resolve_tracking_uri

    tracking_uri = resolve_tracking_uri()
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    try:
        uri, key = _resolve(client, ref)
    except MlflowException as exc:
        raise ModelLoadError(
            f"model {ref} not found in the registry at {tracking_uri}: {exc.message}"
        ) from exc
    except OSError as exc:  # requests' connection errors are OSErrors
        raise ModelLoadError(f"cannot reach the registry at {tracking_uri} for {ref}: {exc}") from exc
    dest = cache_dir() / "models" / _safe(key)
    if (found := _find_model_dir(dest)) is not None:
        return found
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(tmp), tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
        if _find_model_dir(tmp) is None:
            raise ModelLoadError(f"{ref} ({uri}) holds no model folder ({WEIGHTS} not found)")
        try:
            tmp.rename(dest)
        except OSError:  # another process cached it first
            if _find_model_dir(dest) is None:
                raise
    except MlflowException as exc:
        raise ModelLoadError(f"cannot download model {ref} ({uri}): {exc.message}") from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot download model {ref} ({uri}): {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = _find_model_dir(dest)
    assert found is not None
    return found
