"""Export for serving: TorchScript of a CTC model, checked against the eager model before it is written."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from khmer_ocr.errors import ExportError
from khmer_ocr.inference import load_model
from khmer_ocr.models.recognizer import CTCRecognizer, trace_ctc_model

CHECK_WIDTHS = (96, 333, 800)


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    same_decoding: bool


def export_torchscript(model_dir: str | Path, out: str | Path, atol: float = 1e-3) -> ExportResult:
    """Trace the model, compare it with eager PyTorch at several widths (logits within atol, identical greedy
    transcriptions), and only then write it."""
    model, cfg, _ = load_model(model_dir)
    if not isinstance(model, CTCRecognizer):
        raise ExportError(
            f"{cfg.arch} models do not export to TorchScript; use a CTC model (arch ctc or fast)"
        )
    traced = trace_ctc_model(model)
    gen = torch.Generator().manual_seed(0)
    worst, same = 0.0, True
    with torch.inference_mode():
        for width in CHECK_WIDTHS:
            images = torch.rand(3, 1, cfg.input_height, width, generator=gen)
            widths = torch.tensor([width, width * 2 // 3, max(16, width // 3)])
            eager, exported = model(images, widths), traced(images, widths)
            n = eager["ctc_lengths"]
            for i in range(len(widths)):
                diff = (eager["ctc_logits"][i, : n[i]] - exported["ctc_logits"][i, : n[i]]).abs().max()
                worst = max(worst, float(diff))
            same &= bool(torch.equal(eager["ctc_logits"].argmax(-1), exported["ctc_logits"].argmax(-1)))
    if worst > atol or not same:
        raise ExportError(
            f"export disagrees with the eager model: max |diff| {worst:.2e}, same argmax {same}"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(out))
    return ExportResult(out, worst, same)
