"""Names the library and the Airflow plugins share, in a module that imports nothing: the DAG processor
imports it when it parses the DAG files (the rest of the library is imported inside tasks only)."""

MODEL_NAME = "khmer-ocr"  # the registered model in MLflow and the model TorchServe serves
# The seven phase-3.1 configurations (khmer_ocr/configs/train/phase3_1/<name>.yaml), in the order compared.
PHASE3_1 = (
    "conservative_small",
    "baseline_optimized",
    "focal_loss_experiment",
    "aggressive_learning",
    "fast_convergence",
    "large_model_regularized",
    "ctc_alignment_free",
)
# Every packaged training config a DAG may run (khmer_ocr/configs/train/<name>.yaml).
TRAIN_CONFIGS = ("production_fast", "phase3_2", *(f"phase3_1/{c}" for c in PHASE3_1))
