"""Losses, chosen per configuration: cross-entropy with label smoothing, focal (alpha 0.25, gamma 2),
hierarchical (auxiliary terms over Khmer character classes), confidence-aware (penalizes miscalibration)
and a sequence-level objective (CTC, alone for CTC models, jointly with attention for the hybrid)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from khmer_ocr.models import PAD
from khmer_ocr.script import CharClass, Charset, char_class
from khmer_ocr.training.data import Batch


@dataclass
class LossConfig:
    kind: str = "ce"  # token loss of the attention decoder: ce | focal
    label_smoothing: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    hierarchical_weight: float = 0.0  # auxiliary character-class loss
    confidence_weight: float = 0.0  # calibration penalty
    ctc_weight: float = 0.0  # sequence-level CTC on the encoder (hybrid); CTC-only models always use CTC


CLASSES = [c.value for c in CharClass] + ["special"]


def class_index(charset: Charset) -> torch.Tensor:
    """Token id -> index of its character class in CLASSES (specials get their own class)."""
    ids = [CLASSES.index("special")] * len(charset.specials)
    ids += [CLASSES.index(char_class(c).value) for c in charset.chars]
    return torch.tensor(ids, dtype=torch.long)


def focal_loss(logits: torch.Tensor, gold: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Mean focal loss over the tokens (logits (N, V), gold (N,))."""
    logp = F.log_softmax(logits.float(), dim=-1).gather(1, gold[:, None]).squeeze(1)
    return (-alpha * (1 - logp.exp()) ** gamma * logp).mean()


def hierarchical_loss(logits: torch.Tensor, gold: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the character class: class probability = sum of its tokens' probabilities."""
    probs = F.softmax(logits.float(), dim=-1)
    class_probs = torch.zeros(probs.shape[0], len(CLASSES), device=probs.device).index_add_(
        1, classes.to(probs.device), probs
    )
    return F.nll_loss(class_probs.clamp_min(1e-8).log(), classes.to(gold.device)[gold])


def confidence_loss(logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Brier-style miscalibration: (confidence of the top token - whether it is right)^2."""
    probs = F.softmax(logits.float(), dim=-1)
    conf, pred = probs.max(dim=-1)
    return ((conf - (pred == gold).float()) ** 2).mean()


def ctc_loss(outputs: dict, batch: Batch) -> torch.Tensor:
    log_probs = F.log_softmax(outputs["ctc_logits"].float(), dim=-1).transpose(0, 1)  # (T, B, V)
    lengths = batch.target_lengths
    gold = batch.targets[:, 1:-1]  # without <sos>; <eos> and padding are cut by the lengths
    flat = torch.cat([gold[i, : lengths[i]] for i in range(len(lengths))])
    return F.ctc_loss(log_probs, flat, outputs["ctc_lengths"], lengths, blank=PAD, zero_infinity=True)


class RecognitionLoss:
    """The configured combination; returns the total and each term (for logging)."""

    def __init__(self, cfg: LossConfig, charset: Charset) -> None:
        if cfg.kind not in ("ce", "focal"):
            raise ValueError(f"unknown loss kind {cfg.kind!r}; choose ce or focal")
        self.cfg = cfg
        self.classes = class_index(charset)

    def __call__(self, outputs: dict, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, parts = self.cfg, {}
        if "logits" not in outputs:  # a CTC model: the sequence-level objective is the loss
            total = ctc_loss(outputs, batch)
            parts["ctc"] = total.item()
            return total, parts
        gold = batch.targets[:, 1:]
        keep = gold != PAD
        logits = outputs["logits"][keep]
        gold = gold[keep]
        if cfg.kind == "focal":
            total = focal_loss(logits, gold, cfg.focal_alpha, cfg.focal_gamma)
        else:
            total = F.cross_entropy(logits.float(), gold, label_smoothing=cfg.label_smoothing)
        parts[cfg.kind] = total.item()
        for name, weight, term in (
            ("hierarchical", cfg.hierarchical_weight, lambda: hierarchical_loss(logits, gold, self.classes)),
            ("confidence", cfg.confidence_weight, lambda: confidence_loss(logits, gold)),
            ("ctc", cfg.ctc_weight, lambda: ctc_loss(outputs, batch)),
        ):
            if weight > 0:
                value = term()
                parts[name] = value.item()
                total = total + weight * value
        return total, parts
