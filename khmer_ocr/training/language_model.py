"""Giving a model folder a character language model: counted on text lines drawn from the generator's
text sources (the lines training renders, not their images), stored as lm.safetensors beside the weights,
with the beam-search settings in model.yaml's `decoding:`."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from khmer_ocr.data.config import DataConfig
from khmer_ocr.model_folder import LANGUAGE_MODEL, REFERENCE_MODEL, missing_files
from khmer_ocr.models.char_lm import CharNgramLM
from khmer_ocr.models.ctc_beam import BeamConfig, read_decoding, write_decoding

log = logging.getLogger(__name__)


def generator_texts(cfg: DataConfig, lines: int, seed: int) -> Iterator[str]:
    """`lines` texts as the generator composes them (its sources, mixed by weight, and its levels' line
    lengths in turn), from a seed of their own."""
    from khmer_ocr.data.sources import LineComposer

    composer = LineComposer(cfg.text)
    composer.warm_up()
    rng = np.random.default_rng(seed)
    for i in range(lines):
        yield composer.compose(rng, cfg.levels[i % len(cfg.levels)].length)[0]


def build_language_model(
    model_dir: str | Path,
    cfg: DataConfig,
    lines: int = 200_000,
    order: int = 5,
    seed: int = 7919,
    decoding: BeamConfig | None = None,
    progress: bool = True,
) -> CharNgramLM:
    """Count an order-`order` LM on `lines` generator texts and write it into the model folder, with the
    beam-search settings; Recognizer.load then decodes with it."""
    from tqdm import tqdm

    model_dir = Path(model_dir)
    if missing := missing_files(model_dir):
        raise FileNotFoundError(f"{model_dir} is not a model folder: missing {', '.join(missing)}")
    texts = tqdm(generator_texts(cfg, lines, seed), total=lines, desc="LM text", disable=not progress)
    lm = CharNgramLM.fit(texts, order=order)
    lm.save(
        model_dir / LANGUAGE_MODEL,
        {"lines": str(lines), "seed": str(seed), "data_profile": cfg.name, "text": repr(asdict(cfg.text))},
    )
    write_decoding(model_dir, decoding or BeamConfig())
    return lm


def copy_language_model(source: str | Path, model_dir: str | Path) -> bool:
    """Give a model folder the language model and decoding settings of another ("reference": the committed
    model); False, changing nothing, when the source has no language model (a bundle ships none)."""
    src = REFERENCE_MODEL if str(source) == "reference" else Path(source)
    if not (src / LANGUAGE_MODEL).is_file():
        log.info("%s has no %s: %s decodes by best path", src, LANGUAGE_MODEL, model_dir)
        return False
    shutil.copyfile(src / LANGUAGE_MODEL, Path(model_dir) / LANGUAGE_MODEL)
    write_decoding(model_dir, read_decoding(src))
    return True
