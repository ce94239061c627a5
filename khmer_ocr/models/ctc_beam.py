"""CTC prefix beam search with a character language model (shallow fusion).

Each prefix keeps the CTC log-probability of ending in a blank and in its last character, and the sum of
its characters' LM log-probabilities; prefixes are ranked by
    log P_ctc(prefix) + lm_weight * log P_lm(prefix) + length_bonus * len(prefix).
Frames where the blank is nearly certain only move every prefix to "ends in blank", in one step per run
of such frames, and a frame considers only the characters above a probability floor, so a line costs
about as many steps as it has characters.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from khmer_ocr.config import from_dict
from khmer_ocr.model_folder import MODEL_YAML
from khmer_ocr.models.char_lm import CharNgramLM

NEG = -1e30


@dataclass
class BeamConfig:
    """Decoding settings stored in a model folder's model.yaml (`decoding:`)."""

    lm_weight: float = 0.3  # higher reads the generator's own text better, text the LM never counted worse
    length_bonus: float = 1.5
    beam_width: int = 8
    beam_margin: float = 5.0  # prefixes scoring this much below the best are dropped
    char_floor: float = 6e-3  # characters below this probability in a frame are not tried there
    max_chars: int = 16  # at most this many characters tried per frame (the likeliest)
    blank_skip: float = 0.99  # frames with a blank at least this likely are passed in one step


def read_decoding(model_dir: str | Path) -> BeamConfig:
    """The beam settings in a model folder's model.yaml (`decoding:`; the defaults when it has none)."""
    doc = yaml.safe_load((Path(model_dir) / MODEL_YAML).read_text(encoding="utf-8"))
    return from_dict(BeamConfig, doc.get("decoding") or {})


def write_decoding(model_dir: str | Path, decoding: BeamConfig) -> None:
    """Write the `decoding:` section of a model folder's model.yaml."""
    path = Path(model_dir) / MODEL_YAML
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["decoding"] = asdict(decoding)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _lse(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b <= NEG else a + math.log1p(math.exp(b - a))


def beam_search(
    log_probs: np.ndarray, chars: tuple[str, ...], first_char_id: int, lm: CharNgramLM, cfg: BeamConfig
) -> tuple[str, float]:
    """Best text of one line's (T, V) log-probabilities (id 0 the blank, ids >= first_char_id the
    characters `chars`), and its CTC log-probability."""
    log_probs = np.asarray(log_probs, dtype=np.float32)
    skip = log_probs[:, 0] > math.log(cfg.blank_skip)
    floor = math.log(cfg.char_floor)
    weight, bonus = cfg.lm_weight, cfg.length_bonus
    # prefix -> [log P(ends in blank), log P(ends in its last char), its LM and length score]
    beams: dict[str, list[float]] = {"": [0.0, NEG, 0.0]}
    ext: dict[str, float] = {}  # prefix -> the LM and length score of its last character
    t, n = 0, len(log_probs)
    while t < n:
        if skip[t]:
            end = t
            while end < n and skip[end]:
                end += 1
            blank = float(log_probs[t:end, 0].sum())
            beams = {p: [_lse(b, nb) + blank, NEG, lm_sum] for p, (b, nb, lm_sum) in beams.items()}
            t = end
            continue
        row = log_probs[t]
        blank = float(row[0])
        chars_row = row[first_char_id:]
        ids = np.flatnonzero(chars_row > floor)
        if len(ids) > cfg.max_chars:  # an unsure frame (or an untrained model): the likeliest only
            ids = ids[np.argpartition(chars_row[ids], -cfg.max_chars)[-cfg.max_chars :]]
        cands = [(chars[i], float(chars_row[i])) for i in ids.tolist()]
        nxt: dict[str, list[float]] = {}
        unscored: list[tuple[str, str]] = []  # new prefixes whose last character the LM has not scored
        for prefix, (b, nb, lm_sum) in beams.items():
            total = _lse(b, nb)
            entry = nxt.setdefault(prefix, [NEG, NEG, lm_sum])
            entry[0] = _lse(entry[0], total + blank)
            last = prefix[-1:]
            for ch, lp in cands:
                if ch == last:
                    entry[1] = _lse(entry[1], nb + lp)  # the same character, still the same run
                    new = b + lp  # a repeat after a blank
                else:
                    new = total + lp
                if new <= NEG:
                    continue
                longer = prefix + ch
                e = nxt.get(longer)
                if e is not None:
                    e[1] = _lse(e[1], new)
                    continue
                lm_lp = ext.get(longer)
                if lm_lp is None:
                    unscored.append((prefix, ch))
                nxt[longer] = [NEG, new, lm_sum + (lm_lp or 0.0)]
        if unscored:  # scored together: one lookup in the LM
            for (prefix, ch), lm_lp in zip(unscored, lm.logps(unscored), strict=True):
                nxt[prefix + ch][2] += ext.setdefault(prefix + ch, weight * lm_lp + bonus)
        scored = [(_lse(b, nb) + lm_sum, p) for p, (b, nb, lm_sum) in nxt.items()]
        if len(scored) > cfg.beam_width:
            scored = heapq.nlargest(cfg.beam_width, scored)
        cut = max(scored)[0] - cfg.beam_margin
        beams = {p: nxt[p] for score, p in scored if score >= cut}
        t += 1
    best, (b, nb, _) = max(beams.items(), key=lambda kv: _lse(kv[1][0], kv[1][1]) + kv[1][2])
    return best, _lse(b, nb)
