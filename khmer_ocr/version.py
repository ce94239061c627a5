"""The package version (its own module: modules that record it import nothing else of the package)."""

__version__ = "0.1.0"
