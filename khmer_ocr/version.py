"""The package version and its line finder's (its own module: modules that record them import nothing else
of the package)."""

__version__ = "0.1.0"
# The page reader's line finder (khmer_ocr.pages.layout): classical code, no weights, so a model serves pages
# with the finder of the installed package. Its model card and registry tags record this; bump it whenever
# a change to khmer_ocr.pages.layout or khmer_ocr.pages.ink moves the boxes it finds.
LINE_FINDER_VERSION = "classical-1"
