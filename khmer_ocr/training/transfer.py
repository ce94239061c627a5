"""Weights from other models: transfer (start a new model from the weights of another whose names and shapes
match) and averaging (one model from runs of one architecture fine-tuned from the same start)."""

from __future__ import annotations

from pathlib import Path

import torch

from khmer_ocr.errors import ModelLoadError
from khmer_ocr.inference import load_model, save_model
from khmer_ocr.model_store import model_dir
from khmer_ocr.training.checkpoint import kept_weights
from khmer_ocr.training.language_model import copy_language_model


def transfer_weights(model: torch.nn.Module, ref: str | Path, tracking_uri: str | None = None) -> str:
    """Load into model the weights whose names and shapes match from a training checkpoint file (.pt) or any
    model reference khmer_ocr.model_store resolves (a folder, s3://..., models:/..., runs:/...; tracking_uri:
    their MLflow registry); returns what was transferred and what was not, by module, in one line."""
    path = Path(str(ref))
    if path.is_file():  # a checkpoint of a training run: the running mean of its weights when it kept one
        state = kept_weights(torch.load(path, map_location="cpu", weights_only=True))
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


def average_models(refs: list[str | Path], out: str | Path, tracking_uri: str | None = None) -> Path:
    """Write the model folder whose weights are the mean of the models' (a "model soup": runs fine-tuned from
    one start with different data stay in one basin, and their mean often reads better than either). The
    models must share architecture and charset; refs resolve as in khmer_ocr.model_store. The first
    model's language model, if it has one, comes along."""
    if len(refs) < 2:
        raise ModelLoadError("averaging needs at least two models")
    folders = [model_dir(ref, tracking_uri) for ref in refs]
    loaded = [load_model(folder) for folder in folders]
    model, cfg, charset = loaded[0]
    for ref, (_, other_cfg, other_charset) in zip(refs[1:], loaded[1:], strict=True):
        if other_cfg != cfg or other_charset.version != charset.version:
            raise ModelLoadError(f"{ref} differs from {refs[0]} in architecture or charset: cannot average")
    states = [m.state_dict() for m, _, _ in loaded]
    mean = {
        k: torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v
        for k, v in states[0].items()
    }
    model.load_state_dict(mean)
    out = save_model(model, cfg, charset, out)
    copy_language_model(folders[0], out)  # the first model's, when it has one
    return out
