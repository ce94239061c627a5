"""Errors of the model side that the CLI reports as one clear line (kept free of heavy imports)."""


class ModelLoadError(ValueError):
    """A model reference that cannot be loaded (missing folder, files or alias)."""


class ExportError(ValueError):
    """The model cannot be exported, or the export does not agree with the eager model."""


class RegistryError(Exception):
    """A registry operation that cannot be done; the message says why and what to do."""


class PromotionRefused(RegistryError):
    """promote() refused: the version is not approved, fails its gates, or is worse than the champion."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ServingError(RuntimeError):
    """TorchServe could not be prepared, started or reached; the message says what to fix."""


class DeployError(ServingError):
    """A deployment failed (registration or smoke test); the version served before keeps serving."""
