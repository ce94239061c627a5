"""Build recognizers by name: a registry of builders keyed by `ModelConfig.arch`, and size presets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from khmer_ocr.models.backbones import BiLSTMEncoder, FastBackbone, ResNetBackbone
from khmer_ocr.models.config import ModelConfig
from khmer_ocr.models.heads import AttentionDecoder, CTCHead
from khmer_ocr.models.recognizer import CTCRecognizer, HybridRecognizer


@dataclass(frozen=True)
class ResNetPreset:
    """hybrid/ctc sizes: CNN channels (stem + 4 stages), blocks per stage, CNN output features,
    BiLSTM hidden size (2 layers), attention decoder width (hybrid only)."""

    channels: tuple[int, int, int, int, int]
    blocks: tuple[int, int, int, int]
    cnn_out: int
    rnn_hidden: int
    decoder_dim: int


@dataclass(frozen=True)
class FastPreset:
    """fast sizes: stem channels, depthwise-separable blocks as (channels, (height, width) stride),
    features per frame, BiLSTM hidden size (0 = no BiLSTM, one layer otherwise), stem stride."""

    stem: int
    blocks: tuple[tuple[int, tuple[int, int]], ...]
    cnn_out: int
    rnn_hidden: int
    stem_stride: tuple[int, int] = (2, 2)


# Parameter counts at 203 classes are pinned in tests/test_models.py.
RESNET_PRESETS: dict[str, ResNetPreset] = {
    "tiny": ResNetPreset((16, 32, 48, 64, 96), (1, 1, 1, 1), 96, 64, 96),
    "small": ResNetPreset((32, 64, 128, 256, 320), (1, 2, 2, 2), 320, 320, 320),
    "medium": ResNetPreset((32, 64, 128, 256, 384), (1, 2, 2, 2), 384, 384, 384),
    "large": ResNetPreset((64, 128, 256, 384, 512), (1, 2, 3, 2), 512, 384, 384),
}

_S2, _S21, _S1 = (2, 2), (2, 1), (1, 1)  # (height, width) strides of a depthwise-separable block
# Chosen with `bench/inference.py --fast-variants`: "small" is the CPU production model (<= 3 ms per 48x400
# line on one thread with BatchNorm folded); "tiny" has no BiLSTM; "base" trades speed for capacity.
# "base" with a width stride of 3 (a 3x3 stem of stride (2, 3)): at input height 48 about 4 CTC frames per
# Khmer code point, where stride 4 at height 32 starves stacked clusters and spaces of frames.
_BASE_STRIDE3 = FastPreset(
    16, ((48, _S21), (64, _S1), (128, _S21), (128, _S1), (192, _S21), (192, _S1)), 192, 128, (2, 3)
)
FAST_PRESETS: dict[str, FastPreset] = {
    "tiny": FastPreset(16, ((32, _S2), (64, _S21), (64, _S1), (96, _S21), (96, _S1)), 128, 0),
    "small": FastPreset(16, ((32, _S2), (48, _S1), (96, _S21), (96, _S1), (160, _S21), (160, _S1)), 128, 96),
    "base": FastPreset(
        32, ((64, _S2), (64, _S1), (128, _S21), (128, _S1), (192, _S21), (192, _S1)), 192, 128
    ),
    "base_stride3": _BASE_STRIDE3,
    # base_stride3 with two more residual blocks at the last stage (about 17 % slower); its first blocks
    # carry the same names, so `init_from` a base_stride3 model starts it reading exactly as that model did.
    "deep_stride3": replace(_BASE_STRIDE3, blocks=_BASE_STRIDE3.blocks + ((192, _S1),) * 2),
}

Builder = Callable[[ModelConfig], nn.Module]
MODEL_BUILDERS: dict[str, Builder] = {}
SIZES: dict[str, tuple[str, ...]] = {}


def register_model(arch: str, sizes: tuple[str, ...]) -> Callable[[Builder], Builder]:
    """Decorator: make `build_model(ModelConfig(arch=arch, size=...))` call this builder."""

    def wrap(fn: Builder) -> Builder:
        MODEL_BUILDERS[arch] = fn
        SIZES[arch] = sizes
        return fn

    return wrap


def _resnet_parts(cfg: ModelConfig) -> tuple[ResNetPreset, ResNetBackbone, BiLSTMEncoder]:
    p = RESNET_PRESETS[cfg.size]
    backbone = ResNetBackbone(p.channels, p.blocks, p.cnn_out, cfg.input_height)
    hidden = p.rnn_hidden if cfg.rnn_hidden is None else cfg.rnn_hidden
    if hidden <= 0:
        raise ValueError(f"{cfg.arch} needs rnn_hidden > 0")
    return p, backbone, BiLSTMEncoder(p.cnn_out, hidden, layers=2, dropout=cfg.dropout)


@register_model("hybrid", tuple(RESNET_PRESETS))
def build_hybrid(cfg: ModelConfig) -> HybridRecognizer:
    p, backbone, encoder = _resnet_parts(cfg)
    ctc_head = CTCHead(encoder.out_dim, cfg.num_classes, cfg.dropout)
    decoder = AttentionDecoder(
        cfg.num_classes, encoder.out_dim, p.decoder_dim, cfg.heads, cfg.dropout, cfg.max_length
    )
    return HybridRecognizer(cfg, backbone, encoder, ctc_head, decoder)


@register_model("ctc", tuple(RESNET_PRESETS))
def build_ctc(cfg: ModelConfig) -> CTCRecognizer:
    _, backbone, encoder = _resnet_parts(cfg)
    return CTCRecognizer(cfg, backbone, encoder, CTCHead(encoder.out_dim, cfg.num_classes, cfg.dropout))


@register_model("fast", tuple(FAST_PRESETS))
def build_fast(cfg: ModelConfig) -> CTCRecognizer:
    p = FAST_PRESETS[cfg.size]
    backbone = FastBackbone(p.stem, p.blocks, p.cnn_out, cfg.input_height, p.stem_stride)
    hidden = p.rnn_hidden if cfg.rnn_hidden is None else cfg.rnn_hidden
    encoder = BiLSTMEncoder(p.cnn_out, hidden, layers=1) if hidden > 0 else None
    head = CTCHead(encoder.out_dim if encoder else p.cnn_out, cfg.num_classes, cfg.dropout)
    return CTCRecognizer(cfg, backbone, encoder, head)


def build_model(cfg: ModelConfig) -> nn.Module:
    """The recognizer named by cfg.arch and cfg.size, freshly initialised (load weights with
    `load_state_dict`)."""
    if cfg.arch not in MODEL_BUILDERS:
        raise ValueError(f"unknown arch {cfg.arch!r}; choices: {sorted(MODEL_BUILDERS)}")
    if cfg.size not in SIZES[cfg.arch]:
        raise ValueError(f"unknown size {cfg.size!r} for arch {cfg.arch!r}; choices: {list(SIZES[cfg.arch])}")
    return MODEL_BUILDERS[cfg.arch](cfg)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
