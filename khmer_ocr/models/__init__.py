"""Khmer text-line recognizers: hybrid (CNN + BiLSTM + attention decoder + auxiliary CTC), ctc, fast.

    from khmer_ocr.models import ModelConfig, build_model, fuse_for_inference
    model = build_model(ModelConfig(arch="fast", size="small"))
    model.load_state_dict(state_dict)  # plain state_dict; the ModelConfig is saved beside it
    model = fuse_for_inference(model)  # eval, no grad, BatchNorm folded: the serving copy
    ids, probs = model.decode(images, widths)  # images (B, 1, 48, W): ink 1.0, paper 0.0, right-padded 0

Training: `model(images, widths, targets)` -> {"ctc_logits", "ctc_lengths", and "logits" for the hybrid};
export of CTC models: `trace_ctc_model(model)` (TorchScript). See recognizer.py for the conventions.
"""

from khmer_ocr.models.builder import (
    FAST_PRESETS,
    MODEL_BUILDERS,
    RESNET_PRESETS,
    SIZES,
    build_model,
    count_parameters,
    register_model,
)
from khmer_ocr.models.config import ModelConfig
from khmer_ocr.models.heads import EOS, PAD, SOS, UNK, decoder_targets
from khmer_ocr.models.recognizer import (
    CTCRecognizer,
    HybridRecognizer,
    TracedCTC,
    ctc_best_path,
    fuse_for_inference,
    serving_model,
    trace_ctc_model,
)

__all__ = [
    "EOS",
    "FAST_PRESETS",
    "MODEL_BUILDERS",
    "PAD",
    "RESNET_PRESETS",
    "SIZES",
    "SOS",
    "UNK",
    "CTCRecognizer",
    "HybridRecognizer",
    "ModelConfig",
    "TracedCTC",
    "build_model",
    "count_parameters",
    "ctc_best_path",
    "decoder_targets",
    "fuse_for_inference",
    "register_model",
    "serving_model",
    "trace_ctc_model",
]
