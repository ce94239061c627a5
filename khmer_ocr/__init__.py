"""khmer-ocr: synthetic Khmer text-line data, recognizer training, registry and serving."""

__version__ = "0.1.0"
