"""Errors of the model side that the CLI reports as one clear line (kept free of heavy imports)."""


class ModelLoadError(ValueError):
    """A model reference that cannot be loaded (missing folder, files or alias)."""


class ExportError(ValueError):
    """The model cannot be exported, or the export does not agree with the eager model."""
