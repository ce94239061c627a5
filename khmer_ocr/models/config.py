"""The recognizer's configuration: which architecture, which size, and the few knobs that change shapes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    """What `build_model` needs; saved beside the weights (model.yaml, khmer_ocr.config) to rebuild them.

    arch:  "hybrid": CNN + 2-layer BiLSTM + multi-head attention decoder, plus an auxiliary CTC head on the
           encoder (best accuracy, autoregressive decoding).
           "ctc": the same CNN + BiLSTM with a CTC head only (alignment-free, one pass).
           "fast": depthwise-separable CNN (+ optional small BiLSTM) + linear CTC head: the CPU production
           model.
    size:  "tiny" | "small" | "medium" | "large" for hybrid/ctc; "tiny" | "small" | "base" for fast.
    input_height: images are resized to this height by the caller (a multiple of 16); width is free.
    heads: attention heads of the hybrid decoder (must divide its width).
    max_length: longest decoded sequence in tokens, without <sos>/<eos>.
    rnn_hidden: overrides the size's BiLSTM hidden size (0 removes the fast model's BiLSTM).
    """

    arch: str = "hybrid"
    size: str = "small"
    num_classes: int = 203
    input_height: int = 48
    heads: int = 4
    dropout: float = 0.1
    max_length: int = 100
    rnn_hidden: int | None = None
