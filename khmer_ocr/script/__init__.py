"""Khmer Unicode knowledge: inventory and classes, normalization, clusters, the model charset."""

from khmer_ocr.script.charset import Charset, default_charset
from khmer_ocr.script.clusters import clusters
from khmer_ocr.script.inventory import CharClass, char_class
from khmer_ocr.script.normalize import is_normalized, normalize

__all__ = ["CharClass", "Charset", "char_class", "clusters", "default_charset", "is_normalized", "normalize"]
