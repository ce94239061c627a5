"""Khmer text-line recognizers: hybrid (CNN + BiLSTM + attention decoder + auxiliary CTC), ctc, fast.

    from khmer_ocr.models import ModelConfig, build_model, fuse_for_inference
    model = build_model(ModelConfig(arch="fast", size="small"))
    model.load_state_dict(state_dict)  # plain state_dict; the ModelConfig is saved beside it
    model = fuse_for_inference(model)  # eval, no grad, BatchNorm folded: the serving copy
    ids, probs = model.decode(images, widths)  # images (B, 1, 48, W): ink 1.0, paper 0.0, right-padded 0

Training: `model(images, widths, targets)` -> {"ctc_logits", "ctc_lengths", and "logits" for the hybrid};
export of CTC models: `trace_ctc_model(model)` (TorchScript). See recognizer.py for the conventions.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562), so that the torch-free modules of this package (config,
# char_lm, ctc_beam: what the CLI's parser and the registry read) load without importing torch.
_SOURCES = {
    "khmer_ocr.models.builder": (
        "FAST_PRESETS",
        "MODEL_BUILDERS",
        "RESNET_PRESETS",
        "SIZES",
        "build_model",
        "count_parameters",
        "register_model",
    ),
    "khmer_ocr.models.config": ("ModelConfig",),
    "khmer_ocr.models.heads": ("EOS", "PAD", "SOS", "UNK", "decoder_targets"),
    "khmer_ocr.models.recognizer": (
        "CTCRecognizer",
        "HybridRecognizer",
        "TracedCTC",
        "ctc_best_path",
        "fuse_for_inference",
        "serving_model",
        "trace_ctc_model",
    ),
}
_MODULE_OF = {name: module for module, names in _SOURCES.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
