"""Text-line recognizers: CNN -> (BiLSTM) -> CTC head, and the hybrid with an attention decoder.

Input convention for every model: images (B, 1, H, W) float in [0, 1] with ink = 1.0 and paper = 0.0
(the caller inverts dark-on-light lines: x = 1 - gray / 255), resized to height `config.input_height`,
right-padded with 0 to the batch's widest line; widths (B,) LongTensor of the true pixel widths. Padding
never changes an image's outputs (in eval mode).

`forward(images, widths, targets=None)` returns a dict:
  "ctc_logits" (B, T, V) per-frame logits (T = W // 4 for hybrid/ctc, ceil(W / 4) for fast),
  "ctc_lengths" (B,) valid frames per image,
  "logits" (B, L+1, V), hybrid only and only when targets (B, L+1) = <sos> + tokens (0-padded) are given.
`decode(images, widths)` returns greedy token ids (without <pad>/<sos>/<eos>) and per-token probabilities.
"""

from __future__ import annotations

import copy
import logging
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from khmer_ocr.models.backbones import BiLSTMEncoder
from khmer_ocr.models.config import ModelConfig
from khmer_ocr.models.heads import EOS, AttentionDecoder, CTCHead

Decoded = tuple[list[list[int]], list[list[float]]]
log = logging.getLogger(__name__)


def ctc_best_path(logits: torch.Tensor, lengths: torch.Tensor) -> Decoded:
    """Greedy CTC: argmax per frame, collapse repeats, drop blanks (0) and <sos>/<eos>; a token's
    probability is the highest of its run of frames."""
    probs, ids = logits.float().softmax(-1).max(-1)
    ids_np, probs_np, lengths_np = ids.cpu().numpy(), probs.cpu().numpy(), lengths.cpu().numpy()
    out_ids: list[list[int]] = []
    out_probs: list[list[float]] = []
    for row_ids, row_probs, n in zip(ids_np, probs_np, lengths_np, strict=True):
        row_ids, row_probs = row_ids[:n], row_probs[:n]
        starts = np.flatnonzero(np.diff(row_ids, prepend=-1) != 0)
        run_max = np.maximum.reduceat(row_probs, starts) if len(starts) else row_probs[:0]
        tokens = row_ids[starts]
        keep = tokens > EOS  # drops blank/<pad> 0, <sos> 1, <eos> 2
        out_ids.append(tokens[keep].tolist())
        out_probs.append(run_max[keep].tolist())
    return out_ids, out_probs


class CTCRecognizer(nn.Module):
    """backbone -> optional BiLSTM encoder -> CTC head ("ctc" and "fast" archs)."""

    def __init__(
        self, config: ModelConfig, backbone: nn.Module, encoder: BiLSTMEncoder | None, head: CTCHead
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.encoder = encoder
        self.head = head

    def forward(
        self, images: torch.Tensor, widths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        feats, lengths = self.backbone(images, widths)
        if self.encoder is not None:
            feats = self.encoder(feats, lengths)
        return {"ctc_logits": self.head(feats), "ctc_lengths": lengths}

    @torch.inference_mode()
    def decode(self, images: torch.Tensor, widths: torch.Tensor) -> Decoded:
        """Best-path CTC decoding (call `.eval()` first)."""
        out = self(images, widths)
        return ctc_best_path(out["ctc_logits"], out["ctc_lengths"])


class HybridRecognizer(nn.Module):
    """backbone -> BiLSTM encoder -> attention decoder, plus an auxiliary CTC head on the encoder."""

    def __init__(
        self,
        config: ModelConfig,
        backbone: nn.Module,
        encoder: BiLSTMEncoder,
        ctc_head: CTCHead,
        decoder: AttentionDecoder,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.encoder = encoder
        self.ctc_head = ctc_head
        self.decoder = decoder

    def encode(self, images: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, lengths = self.backbone(images, widths)
        return self.encoder(feats, lengths), lengths

    def forward(
        self, images: torch.Tensor, widths: torch.Tensor, targets: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        encoded, lengths = self.encode(images, widths)
        out = {"ctc_logits": self.ctc_head(encoded), "ctc_lengths": lengths}
        if targets is not None:
            out["logits"] = self.decoder(encoded, lengths, targets)
        return out

    @torch.inference_mode()
    def decode(self, images: torch.Tensor, widths: torch.Tensor, max_length: int | None = None) -> Decoded:
        """Batched autoregressive greedy decoding until <eos> or max_length tokens (call `.eval()` first)."""
        encoded, lengths = self.encode(images, widths)
        ids, probs = self.decoder.greedy(encoded, lengths, max_length)
        out_ids: list[list[int]] = []
        out_probs: list[list[float]] = []
        limit = self.decoder.max_length if max_length is None else max_length
        for row_ids, row_probs in zip(ids.tolist(), probs.tolist(), strict=True):
            n = row_ids.index(EOS) if EOS in row_ids else min(len(row_ids), limit)
            keep = [i for i in range(n) if row_ids[i] > EOS]  # no <pad>/<sos> mid-sequence
            out_ids.append([row_ids[i] for i in keep])
            out_probs.append([row_probs[i] for i in keep])
        return out_ids, out_probs

    @torch.inference_mode()
    def decode_ctc(self, images: torch.Tensor, widths: torch.Tensor) -> Decoded:
        """Best-path decoding of the auxiliary CTC head (one pass, no decoder)."""
        out = self(images, widths)
        return ctc_best_path(out["ctc_logits"], out["ctc_lengths"])


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode, no-grad copy for serving, with every BatchNorm folded into the convolution or linear
    layer before it (the `conv_bn` and `LinearBN` pairs): same outputs up to float rounding, fewer ops,
    10-30% faster on CPU. Its state_dict differs: keep and load the original's weights, fuse after loading."""
    fused = copy.deepcopy(model).eval().requires_grad_(False)
    for module in fused.modules():
        if isinstance(module, nn.Sequential) and len(module) >= 2:
            first, norm = module[0], module[1]
            if isinstance(first, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                module[0] = fuse_conv_bn_eval(first, norm)
                module[1] = nn.Identity()
            elif isinstance(first, nn.Linear) and isinstance(norm, nn.BatchNorm1d):
                module[0] = fuse_linear_bn_eval(first, norm)
                module[1] = nn.Identity()
    return fused


def trace_ctc_model(model: CTCRecognizer, width: int = 400, batch: int = 1) -> torch.jit.ScriptModule:
    """TorchScript export of a CTC model ("ctc", "fast"): BatchNorm folded (`fuse_for_inference`), then
    traced at one width; the traced module takes any batch and width (padded batches included) and
    returns the same dict as `forward`. Save it with `torch.jit.save`."""
    if not isinstance(model, CTCRecognizer):
        raise TypeError("only CTC recognizers ('ctc', 'fast') export to TorchScript")
    fused = fuse_for_inference(model)
    images = torch.zeros(batch, 1, model.config.input_height, width)
    widths = torch.full((batch,), width, dtype=torch.long)
    with torch.no_grad():
        return torch.jit.trace(fused, (images, widths), strict=False, check_trace=False)


class TracedCTC(nn.Module):
    """A CTC recognizer's serving form on the CPU: `trace_ctc_model` (BatchNorm folded, TorchScript), so
    a line runs without Python between layers: the same outputs, about 20% faster at batch 1 on one
    thread."""

    def __init__(self, model: CTCRecognizer) -> None:
        super().__init__()
        self.config = model.config
        self.traced = trace_ctc_model(model)

    def forward(self, images: torch.Tensor, widths: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.traced(images, widths)

    def decode(self, images: torch.Tensor, widths: torch.Tensor) -> Decoded:
        out = self(images, widths)
        return ctc_best_path(out["ctc_logits"], out["ctc_lengths"])


def serving_model(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """What Recognizer serves: a CTC model on the CPU traced (`TracedCTC`), any other BatchNorm-folded
    (`fuse_for_inference`)."""
    if isinstance(model, CTCRecognizer) and torch.device(device).type == "cpu":
        try:
            with warnings.catch_warnings():  # newer PyTorch calls TorchScript deprecated; it still runs
                warnings.simplefilter("ignore", DeprecationWarning)
                return TracedCTC(model.cpu())
        except Exception as exc:  # a PyTorch without a working tracer: serve the eager model
            log.warning("serving the model untraced: tracing failed (%s)", exc)
    return fuse_for_inference(model)
