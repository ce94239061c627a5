"""Transfer learning: start a new model from the weights of another whose names and shapes match."""

from __future__ import annotations

from pathlib import Path

import torch

from khmer_ocr.inference import load_model
from khmer_ocr.model_store import model_dir


def transfer_weights(model: torch.nn.Module, ref: str | Path, tracking_uri: str | None = None) -> str:
    """Load into model the weights whose names and shapes match from a training checkpoint file (.pt) or any
    model reference khmer_ocr.model_store resolves (a folder, s3://..., models:/..., runs:/...; tracking_uri:
    their MLflow registry); returns what was transferred and what was not, by module, in one line."""
    path = Path(str(ref))
    if path.is_file():  # a checkpoint of a training run
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
    else:
        state = load_model(model_dir(ref, tracking_uri))[0].state_dict()
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)

    def by_module(keys) -> str:
        counts: dict[str, int] = {}
        for k in keys:
            counts[".".join(k.split(".")[:2])] = counts.get(".".join(k.split(".")[:2]), 0) + 1
        return ", ".join(f"{m} ({n})" for m, n in sorted(counts.items())) or "nothing"

    fresh = [k for k in own if k not in matched]
    return (
        f"init_from {ref}: transferred {len(matched)} of {len(own)} tensors: {by_module(matched)}; "
        f"trained from scratch (new in this model or shaped differently): {by_module(fresh)}"
    )
