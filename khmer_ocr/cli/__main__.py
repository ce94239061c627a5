"""`python -m khmer_ocr.cli ...` (torchrun needs a module to start)."""

import sys

from khmer_ocr.cli import main

sys.exit(main())
