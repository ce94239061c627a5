"""A character n-gram language model for CTC beam search: interpolated absolute discounting over code
points, counted on text lines, stored in a model folder as `lm.safetensors` (no pickle).

P(c | h) = max(N(hc) - D, 0) / N(h.) + D * distinct(h.) / N(h.) * P(c | h[1:]), down to an add-0.1
unigram; a context never seen backs off entirely. Lines are padded in front with order - 1 BOS marks, so
the first characters of a line are predicted from "line start".
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

FORMAT = "khmer-ocr-char-ngram-1"
BOS = "\x02"  # never a charset character
_CACHE_LIMIT = 500_000  # cached (context, char) probabilities before the cache is cleared


class CharNgramLM:
    """Counts of every n-gram up to `order` code points; `logp(prefix, char)` for the beam search."""

    def __init__(
        self,
        counts: dict[str, int],
        order: int,
        discount: float = 0.75,
        contexts: dict[str, tuple[int, int]] | None = None,
    ) -> None:
        """counts: every n-gram's count; contexts (derived from counts when not given): context ->
        (N(context .), distinct characters seen after it)."""
        if order < 1:
            raise ValueError("order must be >= 1")
        self.counts, self.order, self.discount = counts, order, discount
        if contexts is None:
            totals: Counter[str] = Counter()
            distinct: Counter[str] = Counter()
            for gram, n in counts.items():
                totals[gram[:-1]] += n
                distinct[gram[:-1]] += 1
            contexts = {h: (n, distinct[h]) for h, n in totals.items()}
        self.contexts = contexts
        self.unigram_total, unigrams = contexts.get("", (0, 0))
        self.vocab = unigrams + 1  # one more for characters never seen
        self._cache: dict[tuple[str, str], float] = {}

    @classmethod
    def fit(cls, lines: Iterable[str], order: int = 5, discount: float = 0.75) -> CharNgramLM:
        """Count the n-grams (1..order) of text lines."""
        counts: Counter[str] = Counter()
        pad = BOS * (order - 1)
        for line in lines:
            s = pad + line.replace("\n", " ")
            for k in range(order):
                counts.update(s[i - k : i + 1] for i in range(order - 1, len(s)))
        return cls(dict(counts), order, discount)

    def prob(self, context: str, char: str) -> float:
        """P(char | context), context at most order - 1 code points."""
        key = (context, char)
        p = self._cache.get(key)
        if p is not None:
            return p
        counts, contexts, discount = self.counts, self.contexts, self.discount
        p = (counts.get(char, 0) + 0.1) / (self.unigram_total + 0.1 * self.vocab)
        for start in range(len(context) - 1, -1, -1):  # longer and longer contexts
            head = context[start:]
            seen = contexts.get(head)
            if seen is None:  # no longer context was seen either (its suffix would have been)
                break
            total, distinct = seen
            p = (max(counts.get(head + char, 0) - discount, 0.0) + discount * distinct * p) / total
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = p
        return p

    def logp(self, prefix: str, char: str) -> float:
        """Natural log of P(char | the line so far)."""
        n = self.order - 1
        if n == 0:
            return math.log(self.prob("", char))
        context = prefix[-n:] if len(prefix) >= n else BOS * (n - len(prefix)) + prefix
        return math.log(self.prob(context, char))

    def perplexity(self, lines: Iterable[str]) -> float:
        """Per-character perplexity of lines (end of line not scored)."""
        total, n = 0.0, 0
        for line in lines:
            for i, ch in enumerate(line):
                total -= self.logp(line[:i], ch)
                n += 1
        return math.exp(total / max(n, 1))

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write safetensors: the n-grams and the contexts (UTF-8, newline-separated, sorted) with their
        counts (uint32), each zlib-compressed; contexts are stored so that loading need not derive them."""
        from safetensors.numpy import save_file

        def packed(values: list) -> np.ndarray:
            data = (
                "\n".join(values).encode("utf-8")
                if values and isinstance(values[0], str)
                else (np.asarray(values, dtype="<u4").tobytes())
            )
            return np.frombuffer(zlib.compress(data, 6), np.uint8)

        grams, heads = sorted(self.counts), sorted(self.contexts)
        tensors = {
            "ngrams": packed(grams),
            "counts": packed([self.counts[g] for g in grams]),
            "contexts": packed(heads),
            "context_totals": packed([self.contexts[h][0] for h in heads]),
            "context_distinct": packed([self.contexts[h][1] for h in heads]),
        }
        meta = {"format": FORMAT, "order": str(self.order), "discount": repr(self.discount)}
        save_file(tensors, str(path), metadata={**(metadata or {}), **meta})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> CharNgramLM:
        """Read `save`'s file; ValueError when it is not one."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
                raw = {k: zlib.decompress(f.get_tensor(k).tobytes()) for k in f.keys()}  # noqa: SIM118
            grams, heads = (raw[k].decode("utf-8").split("\n") for k in ("ngrams", "contexts"))
            counts, totals, distinct = (
                np.frombuffer(raw[k], dtype="<u4").tolist()
                for k in ("counts", "context_totals", "context_distinct")
            )
            order, discount = int(meta["order"]), float(meta["discount"])
            if len(grams) != len(counts) or not len(heads) == len(totals) == len(distinct):
                raise ValueError(f"{path}: the n-grams and their counts differ in number")
            contexts = dict(zip(heads, zip(totals, distinct, strict=True), strict=True))
            return cls(dict(zip(grams, counts, strict=True)), order, discount, contexts)
        except ValueError as exc:
            if str(exc).startswith(f"{path}:"):
                raise
            raise ValueError(f"{path}: not a readable language model ({exc})") from exc
        except (OSError, KeyError, zlib.error, UnicodeDecodeError, SafetensorError) as exc:
            raise ValueError(f"{path}: not a readable language model ({exc})") from exc

    @staticmethod
    def metadata(path: str | Path) -> dict[str, str]:
        """The file's metadata (what it was built from) without reading the counts."""
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            return dict(f.metadata() or {})
