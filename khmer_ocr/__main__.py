"""`python -m khmer_ocr ...`: the khmer-ocr command line."""

import sys

from khmer_ocr.cli import main

sys.exit(main())
