"""A character n-gram language model for CTC beam search: interpolated Kneser-Ney over code points,
counted on text lines, stored in a model folder as `lm.safetensors` (no pickle).

P(c | h) = max(N(hc) - D, 0) / N(h.) + D * distinct(h.) / N(h.) * P(c | h[1:]), down to an add-0.1
unigram; a context never seen backs off entirely. Lines are padded in front with order - 1 BOS marks, so
the first characters of a line are predicted from "line start". N is the raw count for n-grams of the
full order and for those that begin at line start; for shorter ones it is the continuation count, the
number of distinct characters seen before them (Kneser-Ney): a lower order then says how readily a
sequence follows new contexts, which is what it is asked when the longer context was never seen. Against
raw counts everywhere (plain absolute discounting, the first version), on text of sources the LM never
counted it halves the perplexity (57.6 -> 29.1 on CLDR names) and turns a loss into a gain in CER.

In memory every n-gram and context is one integer key (its characters' ids, `bits` bits each) in one
sorted array beside a table of its counts, 20 bytes an entry: the reference model's 2.39M n-grams take
about 70 MB of a process (430 MB as Python dicts of strings) and its file reads 2-5x faster. The lookups
a beam-search step needs are made together, one binary search for all their n-grams and contexts, and
cached: an uncached probability costs about 9 us (4.5 us from dicts), a cached one the same as before.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

FORMAT = "khmer-ocr-char-ngram-2"  # sorted integer keys and their counts
FORMAT_1 = "khmer-ocr-char-ngram-1"  # n-grams as text (still read)
BOS = "\x02"  # never a charset character
_CACHE_LIMIT = 500_000  # cached probabilities (about 60 MB) before the cache is cleared
NEWLINE = 10  # separates the n-grams of a format-1 file
ABSOLUTE_DISCOUNTING, KNESER_NEY = "absolute discounting", "kneser-ney"  # how a table's counts were made


def _code_points(strings: str) -> np.ndarray:
    return np.frombuffer(strings.encode("utf-32-le"), dtype="<u4")


def key_bits(alphabet: str, order: int) -> int:
    """Bits per character in a key: ids 1..len(alphabet), at least a byte; order of them fit 64 bits."""
    bits = max(8, len(alphabet).bit_length())
    if bits * order > 64:
        raise ValueError(f"{len(alphabet)} characters at order {order} do not fit 64-bit keys")
    return bits


def _keys(cps: np.ndarray, alphabet: str, bits: int, order: int) -> np.ndarray:
    """The key of each newline-separated string of code points: its characters' ids (1 + the position in
    the alphabet), the first character in the highest bits."""
    newline = np.flatnonzero(cps == NEWLINE)
    starts = np.concatenate([[0], newline + 1])
    lengths = np.append(newline, len(cps)) - starts
    if lengths.max(initial=0) > order:
        raise ValueError(f"an n-gram is longer than the order {order}")
    known = _code_points(alphabet)
    lut = np.zeros(max(int(cps.max(initial=0)), int(known.max(initial=0))) + 1, np.uint16)  # code point -> id
    lut[known] = np.arange(1, len(known) + 1)
    ids = lut[cps]
    keys = np.zeros(len(starts), np.uint64)
    for j in range(order):
        has = np.flatnonzero(lengths > j)
        keys[has] = (keys[has] << np.uint64(bits)) | ids[starts[has] + j].astype(np.uint64)
    return keys


class CharNgramLM:
    """Counts of every n-gram up to `order` code points; `logp(prefix, char)` for the beam search."""

    def __init__(
        self,
        alphabet: str,
        keys: np.ndarray,
        counts: np.ndarray,
        totals: np.ndarray,
        distinct: np.ndarray,
        order: int,
        discount: float = 0.75,
        smoothing: str = ABSOLUTE_DISCOUNTING,
    ) -> None:
        """keys: sorted, unique, one per n-gram or context (see `key_bits`), 0 for the empty context;
        counts: N(s) as an n-gram; totals: N(s.), the n-grams counted after s as a context; distinct: the
        characters seen after it; smoothing: how the counts were made, "absolute discounting" (raw counts)
        or "kneser-ney" (`kneser_ney`)."""
        if order < 1:
            raise ValueError("order must be >= 1")
        if not len(keys) == len(counts) == len(totals) == len(distinct) or not len(keys):
            raise ValueError("the keys and their counts differ in number, or there are none")
        if np.any(keys[1:] <= keys[:-1]):
            raise ValueError("the keys are not sorted and unique")
        self.alphabet, self.order, self.discount = alphabet, order, discount
        self.bits = key_bits(alphabet, order)
        self.keys = keys.astype(np.uint64)
        self.table = np.stack([counts, totals, distinct], axis=1).astype(np.uint32)  # a row per key
        self.counts, self.totals, self.distinct = self.table.T  # N(s); N(s.); distinct followers of s
        self._ids = {ch: i + 1 for i, ch in enumerate(alphabet)}  # 0: no character
        empty = self.keys[0] == 0
        self.unigram_total = int(self.totals[0]) if empty else 0
        self.vocab = (int(self.distinct[0]) if empty else 0) + 1  # one more for characters never seen
        self.smoothing = smoothing
        self._cache: dict[str, float] = {}

    @classmethod
    def from_strings(
        cls,
        grams: str,
        counts: np.ndarray,
        contexts: str,
        totals: np.ndarray,
        distinct: np.ndarray,
        order: int,
        discount: float = 0.75,
    ) -> CharNgramLM:
        """The model of newline-separated n-grams with their counts and newline-separated contexts (every
        n-gram minus its last character) with their totals and distinct followers."""
        gram_cps, ctx_cps = _code_points(grams), _code_points(contexts)
        present = np.zeros(max(gram_cps.max(initial=0), ctx_cps.max(initial=0), NEWLINE) + 1, bool)
        present[gram_cps] = present[ctx_cps] = True
        present[NEWLINE] = False
        alphabet = "".join(map(chr, np.flatnonzero(present).tolist()))
        bits = key_bits(alphabet, order)
        gram_keys = _keys(gram_cps, alphabet, bits, order)
        ctx_keys = _keys(ctx_cps, alphabet, bits, order)
        if len(gram_keys) != len(counts) or not len(ctx_keys) == len(totals) == len(distinct):
            raise ValueError("the n-grams and their counts differ in number")
        keys, where = np.unique(np.concatenate([gram_keys, ctx_keys]), return_inverse=True)
        table = np.zeros((3, len(keys)), np.uint32)
        table[0, where[: len(gram_keys)]] = counts
        table[1, where[len(gram_keys) :]] = totals
        table[2, where[len(gram_keys) :]] = distinct
        return cls(alphabet, keys, *table, order, discount)

    @classmethod
    def fit(cls, lines: Iterable[str], order: int = 5, discount: float = 0.75) -> CharNgramLM:
        """Count the n-grams (1..order) of text lines."""
        counts: Counter[str] = Counter()
        pad = BOS * (order - 1)
        for line in lines:
            s = pad + line.replace("\n", " ")
            for k in range(order):
                counts.update(s[i - k : i + 1] for i in range(order - 1, len(s)))
        totals: Counter[str] = Counter()
        distinct: Counter[str] = Counter()
        for gram, n in counts.items():
            totals[gram[:-1]] += n
            distinct[gram[:-1]] += 1
        raw = cls.from_strings(
            "\n".join(counts),
            np.fromiter(counts.values(), np.uint32, len(counts)),
            "\n".join(totals),
            np.fromiter(totals.values(), np.uint32, len(totals)),
            np.fromiter((distinct[h] for h in totals), np.uint32, len(totals)),
            order,
            discount,
        )
        return raw.kneser_ney()

    def kneser_ney(self) -> CharNgramLM:
        """The model whose shorter n-grams count their distinct left neighbours instead of their
        occurrences (those that begin at line start keep their counts), with the totals and distinct
        followers of every context recounted over them; from a model of raw counts."""
        keys, bits, order = self.keys, np.uint64(self.bits), self.order
        lengths = np.zeros(len(keys), np.int64)
        for j in range(order):
            lengths += (keys >> (bits * np.uint64(j))) > 0
        is_gram = self.counts > 0
        first = keys >> (bits * (np.maximum(lengths, 1) - 1).astype(np.uint64))
        continued = is_gram & (lengths < order) & (first != self._ids.get(BOS, 0))
        longer = np.flatnonzero(is_gram & (lengths >= 2))
        suffixes = keys[longer] & (
            (np.uint64(1) << (bits * (lengths[longer] - 1).astype(np.uint64))) - np.uint64(1)
        )
        left_neighbours = np.bincount(keys.searchsorted(suffixes), minlength=len(keys))
        counts = np.where(continued, left_neighbours, self.counts).astype(np.int64)
        grams = np.flatnonzero(is_gram)
        contexts = keys.searchsorted(keys[grams] >> bits)
        totals = np.bincount(contexts, weights=counts[grams], minlength=len(keys))
        distinct = np.bincount(contexts, minlength=len(keys))
        return CharNgramLM(
            self.alphabet, keys, counts, totals.astype(np.int64), distinct, order, self.discount, KNESER_NEY
        )

    @property
    def n_grams(self) -> int:
        """How many distinct n-grams (1..order) were counted."""
        return int(np.count_nonzero(self.counts))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CharNgramLM):
            return NotImplemented
        same = (self.alphabet, self.order, self.discount) == (other.alphabet, other.order, other.discount)
        return same and np.array_equal(self.keys, other.keys) and np.array_equal(self.table, other.table)

    __hash__ = None  # type: ignore[assignment]

    def probs(self, queries: list[tuple[str, str]]) -> list[float]:
        """P(char | context) for each (context, char), contexts of at most order - 1 code points: those
        not cached are looked up together, one binary search for all their n-grams and contexts."""
        cache = self._cache
        out = [cache.get(context + char) for context, char in queries]
        todo = [i for i, p in enumerate(out) if p is None]
        if not todo:
            return out  # type: ignore[return-value]
        n, ids, bits = self.order - 1, self._ids, self.bits
        width = 2 * n + 1  # per query: the char alone; its contexts of length 1..n; them with the char
        wanted = [0] * (width * len(todo))
        depths = []
        for q, i in enumerate(todo):
            context, char = queries[i]
            base = q * width
            wanted[base] = cid = ids.get(char, 0)
            key, shift, depth = 0, 0, 0
            for ch in reversed(context[-n:] if n else ""):
                k = ids.get(ch)
                if k is None:  # no longer context was seen either
                    break
                key |= k << shift
                shift += bits
                depth += 1
                wanted[base + depth], wanted[base + n + depth] = key, (key << bits) | cid
            depths.append(depth)
        keys = np.array(wanted, np.uint64)
        at = self.keys.searchsorted(keys)
        at[at == len(self.keys)] = 0
        found = (self.table[at] * (self.keys[at] == keys)[:, None]).tolist()  # rows of unseen keys: 0
        d, unigrams = self.discount, self.unigram_total + 0.1 * self.vocab
        values = []
        for q, depth in enumerate(depths):
            base = q * width
            cid = wanted[base]
            p = ((found[base][0] if cid else 0) + 0.1) / unigrams  # a character never counted: no n-grams
            for j in range(base + 1, base + depth + 1):  # longer and longer contexts, while they were seen
                _, total, follow = found[j]
                if not total:
                    break
                p = (max((found[j + n][0] if cid else 0) - d, 0.0) + d * follow * p) / total
            values.append(p)
        if len(cache) + len(todo) > _CACHE_LIMIT:
            cache.clear()
        for i, value in zip(todo, values, strict=True):
            context, char = queries[i]
            out[i] = cache[context + char] = value
        return out  # type: ignore[return-value]

    def prob(self, context: str, char: str) -> float:
        """P(char | context), context at most order - 1 code points."""
        return self.probs([(context, char)])[0]

    def logps(self, queries: list[tuple[str, str]]) -> list[float]:
        """Natural log of P(char | the line so far) for each (line so far, char)."""
        n = self.order - 1
        pad = BOS * n
        contexts = [
            (prefix[-n:] if len(prefix) >= n else (pad + prefix)[-n:] if n else "", c)
            for prefix, c in queries
        ]
        return [math.log(p) for p in self.probs(contexts)]

    def logp(self, prefix: str, char: str) -> float:
        """Natural log of P(char | the line so far)."""
        return self.logps([(prefix, char)])[0]

    def perplexity(self, lines: Iterable[str]) -> float:
        """Per-character perplexity of lines (end of line not scored)."""
        total, n = 0.0, 0
        for line in lines:
            for i, ch in enumerate(line):
                total -= self.logp(line[:i], ch)
                n += 1
        return math.exp(total / max(n, 1))

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write safetensors: the keys (as differences from the one before) and their counts, each
        zlib-compressed; the alphabet, order and discount in the metadata."""
        from safetensors.numpy import save

        def packed(values: np.ndarray) -> np.ndarray:
            return np.frombuffer(zlib.compress(values.tobytes(), 6), np.uint8)

        tensors = {
            "key_steps": packed(np.diff(self.keys, prepend=np.uint64(0)).astype("<u8")),
            "counts": packed(self.counts.astype("<u4")),
            "totals": packed(self.totals.astype("<u4")),
            "distinct": packed(self.distinct.astype("<u4")),
        }
        meta = {"format": FORMAT, "order": str(self.order), "discount": repr(self.discount)}
        meta |= {"smoothing": self.smoothing, "alphabet": self.alphabet}
        # as bytes written here, the file gets the umask's mode (safetensors' save_file makes it 0600)
        Path(path).write_bytes(save(tensors, metadata={**(metadata or {}), **meta}))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> CharNgramLM:
        """Read `save`'s file (or a format-1 file: n-grams as text); ValueError when it is not one."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") not in (FORMAT, FORMAT_1):
                    raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
                raw = {k: zlib.decompress(f.get_tensor(k).tobytes()) for k in f.keys()}  # noqa: SIM118
            order, discount = int(meta["order"]), float(meta["discount"])
            if meta["format"] == FORMAT_1:
                counts, totals, distinct = (
                    np.frombuffer(raw[k], "<u4") for k in ("counts", "context_totals", "context_distinct")
                )
                grams, heads = (raw[k].decode("utf-8") for k in ("ngrams", "contexts"))
                return cls.from_strings(grams, counts, heads, totals, distinct, order, discount)
            keys = np.cumsum(np.frombuffer(raw["key_steps"], "<u8"), dtype=np.uint64)
            tables = (np.frombuffer(raw[k], "<u4") for k in ("counts", "totals", "distinct"))
            return cls(
                meta["alphabet"],
                keys,
                *tables,
                order,
                discount,
                meta.get("smoothing", ABSOLUTE_DISCOUNTING),
            )
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
