"""The character language model and CTC beam search: probabilities, storage, fusion, and a model folder
that decodes with its LM through Recognizer, the CLI and a corrupt file's error."""

from __future__ import annotations

import math
import shutil
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from khmer_ocr.cli import main
from khmer_ocr.config import load_config, profile_path
from khmer_ocr.data.config import DataConfig
from khmer_ocr.errors import ModelLoadError
from khmer_ocr.inference import Recognizer
from khmer_ocr.model_folder import LANGUAGE_MODEL, REFERENCE_MODEL
from khmer_ocr.models.char_lm import BOS, FORMAT_1, CharNgramLM
from khmer_ocr.models.ctc_beam import BeamConfig, beam_search
from khmer_ocr.torchserve.deploy import SMOKE_IMAGE, SMOKE_TEXT
from khmer_ocr.training.language_model import build_language_model, generator_texts

TEXTS = ["ភាសាខ្មែរ", "ភាសាអង់គ្លេស", "ខ្មែរ ១២៣", "សួស្តី ពិភពលោក", "ភ្នំពេញ"]


def test_probabilities_of_every_context_sum_to_one() -> None:
    lm = CharNgramLM.fit(TEXTS, order=4)
    seen = sorted({c for t in TEXTS for c in t})
    unseen = "\uffff"  # one slot stands for every character never counted
    for context in ["", "ភ", "ភាស", "ខ្មែ", "ក្ក", "\x02\x02\x02"]:
        total = sum(lm.prob(context[-3:], c) for c in seen) + lm.prob(context[-3:], unseen)
        assert total == pytest.approx(1.0, abs=1e-9), context
    # what was counted after a context is far likelier than what was not
    assert lm.logp("ភាសាខ្មែ", "រ") > lm.logp("ភាសាខ្មែ", "ក") + 2


def test_save_and_load_give_the_same_model(tmp_path: Path) -> None:
    lm = CharNgramLM.fit(TEXTS, order=5)
    path = lm.save(tmp_path / LANGUAGE_MODEL, {"source": "test"})
    back = CharNgramLM.load(path)
    assert back == lm and back.order == 5 and back.n_grams == lm.n_grams > 50
    assert back.logp("ភាសា", "ខ") == lm.logp("ភាសា", "ខ")
    assert CharNgramLM.metadata(path)["source"] == "test"


def test_a_format_1_file_reads_as_the_same_model(tmp_path: Path) -> None:
    """Model folders written before format 2 held the n-grams as text; they still load, unchanged."""
    lm = CharNgramLM.fit(TEXTS, order=3)
    grams = Counter(
        g
        for t in TEXTS
        for s in [BOS * 2 + t]
        for k in range(3)
        for g in (s[i - k : i + 1] for i in range(2, len(s)))
    )
    heads: Counter[str] = Counter()
    follow: Counter[str] = Counter()
    for g, n in grams.items():
        heads[g[:-1]] += n
        follow[g[:-1]] += 1

    def packed(data: bytes) -> np.ndarray:
        return np.frombuffer(zlib.compress(data), np.uint8)

    def u32(values: list[int]) -> np.ndarray:
        return packed(np.array(values, "<u4").tobytes())

    tensors = {
        "ngrams": packed("\n".join(grams).encode()),
        "counts": u32(list(grams.values())),
        "contexts": packed("\n".join(heads).encode()),
        "context_totals": u32(list(heads.values())),
        "context_distinct": u32([follow[h] for h in heads]),
    }
    save_file(tensors, str(tmp_path / LANGUAGE_MODEL), {"format": FORMAT_1, "order": "3", "discount": "0.75"})
    old = CharNgramLM.load(tmp_path / LANGUAGE_MODEL)
    assert old.smoothing == "absolute discounting" and lm.smoothing == "kneser-ney"  # it held raw counts
    assert old.kneser_ney() == lm


def test_kneser_ney_backs_off_to_how_many_contexts_a_character_follows() -> None:
    """ឃ is frequent but only ever follows ង; ច is rarer but follows ten characters. After a context that
    neither followed, the raw counts favour ឃ and Kneser-Ney's continuation counts ច."""
    texts = ["ងឃ"] * 30 + [c + "ច" for c in "កខគឆជឈដឋឌឍ"] + ["ញា"] * 5
    lm = CharNgramLM.fit(texts, order=2)
    assert lm.prob("ញ", "ច") > 2 * lm.prob("ញ", "ឃ")
    seen = sorted({c for t in texts for c in t})
    assert sum(lm.prob("ញ", c) for c in seen) + lm.prob("ញ", "\uffff") == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other safetensors"])
def test_a_damaged_language_model_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "model"
    shutil.copytree(REFERENCE_MODEL, folder, ignore=shutil.ignore_patterns(LANGUAGE_MODEL))
    path = CharNgramLM.fit(TEXTS).save(folder / LANGUAGE_MODEL)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    else:
        shutil.copy(folder / "model.safetensors", path)
    with pytest.raises(ValueError, match=LANGUAGE_MODEL):
        CharNgramLM.load(path)
    with pytest.raises(ModelLoadError, match=LANGUAGE_MODEL):
        Recognizer.load(folder)
    assert Recognizer.load(folder, use_lm=False).lm is None  # the model itself still loads


CHARS = ("ក", "ខ", "គ", " ")
FIRST = 4  # ids 0-3 are the specials: <pad> (the CTC blank), <sos>, <eos>, <unk>


def _frames(*columns: dict[str, float]) -> np.ndarray:
    """Log-probabilities of frames, each given as {char or "" (blank): probability}."""
    out = np.full((len(columns), FIRST + len(CHARS)), 1e-6, dtype=np.float64)
    for t, col in enumerate(columns):
        for ch, p in col.items():
            out[t, 0 if ch == "" else FIRST + CHARS.index(ch)] = p
    return np.log(out / out.sum(1, keepdims=True)).astype(np.float32)


def test_beam_search_without_a_language_signal_is_best_path() -> None:
    lm = CharNgramLM.fit(["ក"])
    frames = _frames({"ក": 0.9}, {"ក": 0.9}, {"": 0.9}, {"ក": 0.8}, {"ខ": 0.7}, {"": 0.99})
    text, logp = beam_search(frames, CHARS, FIRST, lm, BeamConfig(lm_weight=0, length_bonus=0))
    assert text == "កកខ"  # a blank between the two ក keeps both; repeats without one collapse
    assert -1.5 < logp < 0


def test_the_language_model_decides_an_ambiguous_frame() -> None:
    frames = _frames({"ក": 0.95}, {"": 0.95}, {"ខ": 0.49, "គ": 0.51}, {"": 0.95}, {"ក": 0.95})
    greedy = beam_search(frames, CHARS, FIRST, CharNgramLM.fit(["ក"]), BeamConfig(lm_weight=0))[0]
    assert greedy == "កគក"
    cfg = BeamConfig(lm_weight=0.5, length_bonus=0)
    assert beam_search(frames, CHARS, FIRST, CharNgramLM.fit(["កខក"] * 20 + ["គ"]), cfg)[0] == "កខក"
    assert beam_search(frames, CHARS, FIRST, CharNgramLM.fit(["កគក"] * 20 + ["ខ"]), cfg)[0] == "កគក"


def test_lm_counts_the_texts_of_the_profile_as_overridden(tmp_path: Path) -> None:
    """--set changes the profile the LM's texts are drawn from: here numbers only, so no Khmer letter word
    of the other sources is counted, and the decoding defaults are BeamConfig's."""
    folder = tmp_path / "model"
    shutil.copytree(REFERENCE_MODEL, folder, ignore=shutil.ignore_patterns(LANGUAGE_MODEL))
    args = ["lm", "--model", str(folder), "--lines", "300", "--set", "text.sources={numbers: 1.0}"]
    assert main([*args, "--set", "text.latin_prob=0.0"]) == 0
    meta = CharNgramLM.metadata(folder / LANGUAGE_MODEL)
    assert "'sources': {'numbers': 1.0}" in meta["text"]
    lm = CharNgramLM.load(folder / LANGUAGE_MODEL)
    assert lm.prob("", "៣") > lm.prob("", "ង")  # a Khmer digit is likelier than a letter of words only
    assert Recognizer.load(folder).decoding == BeamConfig()


def test_a_model_folder_decodes_with_its_language_model(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(REFERENCE_MODEL, folder, ignore=shutil.ignore_patterns(LANGUAGE_MODEL))
    cfg = load_config(DataConfig, profile_path("data", "reference"))
    texts = list(generator_texts(cfg, 50, seed=3))
    assert texts == list(generator_texts(cfg, 50, seed=3)) and len(set(texts)) > 40
    assert main(["lm", "--model", str(folder), "--lines", "2000", "--lm-weight", "0.35"]) == 0
    assert CharNgramLM.metadata(folder / LANGUAGE_MODEL)["lines"] == "2000"

    with_lm, without = Recognizer.load(folder), Recognizer.load(folder, use_lm=False)
    assert with_lm.lm is not None and with_lm.decoding.lm_weight == 0.35 and without.lm is None
    assert "4-gram" not in with_lm.decoding_name and "5-gram" in with_lm.decoding_name
    assert without.decoding_name == "best path"
    (pred,) = with_lm.predict([SMOKE_IMAGE])
    assert pred.text == SMOKE_TEXT.read_text(encoding="utf-8").strip()
    assert 0.5 < pred.confidence <= 1.0
    blank = np.full((40, 300), 255, np.uint8)
    assert with_lm.predict([blank])[0].text == ""

    # a second model folder built the same way holds the same model
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    build_language_model(other, cfg, lines=2000, progress=False)
    assert CharNgramLM.load(other / LANGUAGE_MODEL) == with_lm.lm
    assert not math.isnan(with_lm.lm.perplexity(texts))
