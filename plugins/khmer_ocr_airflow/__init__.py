"""khmer-ocr's Airflow glue: hooks (MLflow registry, TorchServe), the deferrable model-approval operator and
its trigger, shared callbacks, assets and task settings.

Airflow puts plugins/ on sys.path, so DAG files import ``khmer_ocr_airflow.<module>``. Nothing here imports
the khmer_ocr library at module import (DAG parsing stays fast); the library is imported inside the
functions that call it, and the library never imports Airflow.
"""
