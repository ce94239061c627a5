"""The library's errors: every error it raises for a reason it can state derives from KhmerOcrError (kept
free of heavy imports: the CLI and the Airflow plugins import it to translate errors).

The command line prints a KhmerOcrError as one line (exit 2; a refused promotion exits 1); an Airflow task
fails at once, without retries, unless the error is `retryable` (a service or store that may answer on the
next try). Each module's own error classes (ConfigError, DatasetError, StorageError, ...) derive from it;
the model, registry and serving errors are defined here.
"""


class KhmerOcrError(Exception):
    """An error whose message says what went wrong and what to do."""

    retryable = False  # True: a service or store that did not answer; the same call may work later


class ModelLoadError(KhmerOcrError, ValueError):
    """A model reference that cannot be loaded (missing folder, files or alias)."""


class ExportError(KhmerOcrError, ValueError):
    """The model cannot be exported, or the export does not agree with the eager model."""


class RegistryError(KhmerOcrError):
    """A registry operation that cannot be done; the message says why and what to do."""


class PromotionRefused(RegistryError):
    """promote() refused: the version is not approved, fails its gates, or is worse than the champion."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ServingError(KhmerOcrError, RuntimeError):
    """TorchServe could not be prepared, started or reached; the message says what to fix."""

    retryable = True


class DeployError(ServingError):
    """A deployment failed (registration or smoke test); the version served before keeps serving."""

    retryable = False
