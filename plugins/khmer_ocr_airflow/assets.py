"""The Assets the khmer-ocr DAGs publish and consume (cheap to import: DAG parsing)."""

from __future__ import annotations

from airflow.sdk import Asset

# A validated dataset version (extra: name, version, uri, num_samples, validation_report, counts).
DATASET = Asset(name="khmer_ocr_dataset", uri="khmer-ocr://datasets/latest", group="khmer-ocr")
# The best phase-3.1 model, registered (extra: version, model_uri, run_id, config, val_char_accuracy).
PHASE3_1_BEST = Asset(
    name="khmer_ocr_phase3_1_best", uri="khmer-ocr://models/phase3_1/best", group="khmer-ocr"
)
# The registry's champion alias moved (extra: version, model_uri, previous, by): khmer_ocr_deploy runs on it.
CHAMPION = Asset(name="khmer_ocr_champion", uri="khmer-ocr://registry/khmer-ocr/champion", group="khmer-ocr")
