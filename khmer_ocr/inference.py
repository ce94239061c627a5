"""Recognizer: load a trained model (folder, or the committed reference model), preprocess, predict.

A model folder holds `model.safetensors` (weights, no pickle), `model.yaml` (architecture and input
size) and `charset.json`; the trainer writes one for every best checkpoint. A CTC model folder may also
hold `lm.safetensors`, a character language model (`khmer-ocr lm`): lines are then decoded by
beam search with it (settings in model.yaml's `decoding:`), else by best path.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from khmer_ocr.config import from_dict
from khmer_ocr.errors import ModelLoadError
from khmer_ocr.model_folder import CHARSET, LANGUAGE_MODEL, MODEL_YAML, WEIGHTS, missing_files
from khmer_ocr.model_store import model_dir
from khmer_ocr.models import ModelConfig, build_model, serving_model
from khmer_ocr.models.char_lm import CharNgramLM
from khmer_ocr.models.ctc_beam import BeamConfig, beam_search, read_decoding
from khmer_ocr.preprocess import batch_lines, prepare_line, to_gray
from khmer_ocr.script import Charset
from khmer_ocr.storage import sha256_file

# A prepared line (ink = 1, paper = 0, contrast already stretched) with no pixel at least this dark has
# nothing written on it (a blank, flat or uniformly coloured image): it reads as "" with confidence 0, not as
# whatever the model makes of empty paper (the reference model says "$" at 0.8).
BLANK_INK = 0.5


@dataclass
class Prediction:
    text: str
    confidence: float  # geometric mean of the per-character probabilities, 0..1


def save_model(
    model: torch.nn.Module, cfg: ModelConfig, charset: Charset, out: str | Path, half: bool = False
) -> Path:
    """Write a model folder; half=True stores fp16 weights (loaded back as fp32)."""
    from safetensors.torch import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    (out / WEIGHTS).write_bytes(save(state))  # with the umask's mode (safetensors' save_file makes it 0600)
    (out / MODEL_YAML).write_text(yaml.safe_dump({"model": asdict(cfg)}, sort_keys=False), encoding="utf-8")
    charset.save(out / CHARSET)
    return out


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, ModelConfig, Charset]:
    """Model, its config and charset from a model folder (weights loaded without unpickling)."""
    from safetensors.torch import load_file

    path = Path(path)
    if missing := missing_files(path):
        raise ModelLoadError(f"{path} is not a model folder: missing {', '.join(missing)}")
    cfg = from_dict(ModelConfig, yaml.safe_load((path / MODEL_YAML).read_text(encoding="utf-8"))["model"])
    charset = Charset.load(path / CHARSET)
    model = build_model(cfg)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path / WEIGHTS)).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[:3]
        raise ModelLoadError(
            f"{path}: the weights do not fit the architecture in {MODEL_YAML}: {first}"
        ) from exc
    return model.to(device).eval(), cfg, charset


class Recognizer:
    """Khmer text-line recognition: `Recognizer.load(ref).predict(images)`."""

    def __init__(
        self,
        model: torch.nn.Module,
        cfg: ModelConfig,
        charset: Charset,
        device: str = "cpu",
        lm: CharNgramLM | None = None,
        decoding: BeamConfig | None = None,
    ) -> None:
        self.model, self.cfg, self.charset, self.device = model.eval(), cfg, charset, torch.device(device)
        self.max_width = 1600
        if lm is not None and cfg.arch not in CTC_ARCHS:
            raise ValueError(
                f"a language model decodes CTC models ({', '.join(CTC_ARCHS)}), not {cfg.arch!r}"
            )
        self.lm, self.decoding = lm, decoding or BeamConfig()

    @classmethod
    def load(
        cls,
        ref: str | Path | None = None,
        device: str = "cpu",
        tracking_uri: str | None = None,
        use_lm: bool = True,
    ) -> Recognizer:
        """ref: a model folder (local or s3://), `models:/<name>@<alias>` / `models:/<name>/<version>`
        (the MLflow registry at tracking_uri), `runs:/<run_id>/model` (a tracked run's model), or None (the
        committed reference model); see khmer_ocr.model_store. use_lm=False decodes by best path even when
        the folder has a language model."""
        folder = model_dir(ref, tracking_uri)
        model, cfg, charset = load_model(folder, device)
        lm, decoding = load_decoding(folder) if use_lm and cfg.arch in CTC_ARCHS else (None, None)
        return cls(serving_model(model, device), cfg, charset, device, lm, decoding)

    @property
    def decoding_name(self) -> str:
        """How lines are decoded, for reports."""
        if self.lm is None:
            return "best path"
        d = self.decoding
        return (
            f"beam search (width {d.beam_width}) with a {self.lm.order}-gram character LM "
            f"({self.lm.smoothing}, weight {d.lm_weight}, length bonus {d.length_bonus})"
        )

    @staticmethod
    def read_image(image) -> np.ndarray:
        """A uint8 grayscale array from a path, PIL image or array; ValueError if it is not an image."""
        if isinstance(image, str | Path):
            import cv2

            data = np.fromfile(str(image), np.uint8)
            img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
            if img is None:
                raise ValueError(f"{image}: not a readable image")
            return img
        if hasattr(image, "convert"):  # PIL
            return np.asarray(image.convert("L"))
        return to_gray(np.asarray(image))

    @torch.inference_mode()
    def predict(self, images: list, batch_size: int = 32) -> list[Prediction]:
        """Text and confidence for each image (any size, dark on light or light on dark); an image with
        nothing written on it reads as empty text with confidence 0."""
        lines = [prepare_line(self.read_image(im), self.cfg.input_height, self.max_width) for im in images]
        out: list[Prediction | None] = [None] * len(lines)
        written = []
        for i, ln in enumerate(lines):
            if float(ln.max()) < BLANK_INK:
                out[i] = Prediction("", 0.0)
            else:
                written.append(i)
        line_widths = [lines[i].shape[1] for i in written]
        order = np.asarray(written, dtype=np.int64)[np.argsort(line_widths)]  # similar widths: less padding
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            # one line needs no padding: unpadded, the model skips all masking and fuses its BiLSTM
            batch, widths = batch_lines([lines[i] for i in idx], multiple=4 if len(idx) > 1 else 1)
            images, lengths = (
                torch.from_numpy(batch).to(self.device),
                torch.from_numpy(widths).to(self.device),
            )
            if self.lm is not None:
                for i, pred in zip(idx, self._beam_decode(images, lengths), strict=True):
                    out[i] = pred
                continue
            ids, probs = self.model.decode(images, lengths)
            for i, tok, p in zip(idx, ids, probs, strict=True):
                conf = math.exp(sum(math.log(max(x, 1e-12)) for x in p) / len(p)) if p else 0.0
                out[i] = Prediction(self.charset.decode(list(tok)), conf)
        return [p for p in out if p is not None]

    def _beam_decode(self, images: torch.Tensor, widths: torch.Tensor) -> list[Prediction]:
        """Beam search with the language model; confidence: the CTC probability of the text, per character
        (geometric mean), as best path's is per character too."""
        assert self.lm is not None
        out = self.model(images, widths)
        log_probs = out["ctc_logits"].float().log_softmax(-1).cpu().numpy()
        first = len(self.charset.specials)
        preds = []
        for row, n in zip(log_probs, out["ctc_lengths"].tolist(), strict=True):
            text, ctc_logp = beam_search(row[:n], self.charset.chars, first, self.lm, self.decoding)
            preds.append(Prediction(text, min(1.0, math.exp(ctc_logp / len(text))) if text else 0.0))
        return preds


CTC_ARCHS = ("ctc", "fast")


_LMS: dict[str, CharNgramLM] = {}  # by content (SHA-256): the last two read


def _cached_lm(path: Path) -> CharNgramLM:
    key = sha256_file(path)
    if key not in _LMS:
        while len(_LMS) >= 2:
            _LMS.pop(next(iter(_LMS)))
        _LMS[key] = CharNgramLM.load(path)
    return _LMS[key]


def load_decoding(folder: str | Path) -> tuple[CharNgramLM | None, BeamConfig | None]:
    """A model folder's language model (read once per process and content: the copies trained model
    folders get share one) and beam settings; (None, None) when it has none."""
    path = Path(folder) / LANGUAGE_MODEL
    if not path.is_file():
        return None, None
    try:
        return _cached_lm(path), read_decoding(folder)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
