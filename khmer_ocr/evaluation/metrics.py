"""Text metrics, defined once: CER / character accuracy over NFC code points, sequence accuracy, cluster CER,
a per-class error analysis, and latency statistics.

Definitions (the founding plan: "character accuracy = 1 - CER over NFC code points"):

* Both references and hypotheses are normalized with Unicode NFC only (`unicodedata.normalize("NFC", s)`),
  never with the project's Khmer normalizer, so that the model gets no credit for fixes it did not make.
* edit distance = Levenshtein distance (unit-cost insertions, deletions and substitutions).
* CER = sum over lines of edit_distance(ref, hyp) / sum over lines of len(ref), pooled over the whole set.
  It can exceed 1 when the hypotheses insert many characters.
* character accuracy = max(0, 1 - CER).
* sequence accuracy = the fraction of lines whose hypothesis equals the reference exactly (after NFC).
* cluster CER = the same as CER over orthographic clusters (khmer_ocr.script.clusters) instead of code points:
  a wrong subscript costs one cluster error but two code-point errors if both COENG and consonant are lost.
* per difficulty level (`score_by_level`): the same metrics over the lines of each level alone.
"""

from __future__ import annotations

import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from khmer_ocr.script.clusters import clusters
from khmer_ocr.script.inventory import CharClass, char_class

try:  # a fast C++ Levenshtein; installed as a dependency of khmer-keyboard, but optional here
    from rapidfuzz.distance import Levenshtein as _rf_levenshtein
except ImportError:  # pragma: no cover - depends on the environment
    _rf_levenshtein = None


# ------------------------------------------------------------------------------------------------------
# Levenshtein distance and alignment
# ------------------------------------------------------------------------------------------------------


def _encode(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
    """Map both sequences to int arrays with one id per distinct item (so numpy can compare them)."""
    ids: dict[Hashable, int] = {}
    a = np.fromiter((ids.setdefault(x, len(ids)) for x in ref), dtype=np.int64, count=len(ref))
    b = np.fromiter((ids.setdefault(x, len(ids)) for x in hyp), dtype=np.int64, count=len(hyp))
    return a, b


def _dp_rows(
    a: np.ndarray, b: np.ndarray, indel: int = 1, sub_cost: Callable[[int], np.ndarray] | None = None
) -> Iterable[np.ndarray]:
    """The rows D[0], D[1], ..., D[n] of the edit-distance matrix, D[i, j] = distance(a[:i], b[:j]).

    Insertions and deletions cost `indel`; substituting b for a[i-1] costs sub_cost(i) (default: 0 where
    equal, 1 elsewhere). Each row is vectorized: with c[j] = min(D[i-1, j] + indel, D[i-1, j-1] + sub[j-1])
    (a deletion or a diagonal step), insertions give D[i, j] = min over k <= j of c[k] + indel * (j - k)
    = indel * j + cummin(c - indel * arange)[j].
    """
    m = len(b)
    cols = np.arange(m + 1, dtype=np.int64) * indel
    row = cols.copy()
    yield row
    for i in range(1, len(a) + 1):
        sub = sub_cost(i) if sub_cost is not None else (b != a[i - 1])
        c = np.empty(m + 1, dtype=np.int64)
        c[0] = i * indel
        c[1:] = np.minimum(row[1:] + indel, row[:-1] + sub)
        row = cols + np.minimum.accumulate(c - cols)
        yield row


def _edit_distance_numpy(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Reference implementation of edit_distance (no rapidfuzz), two rows of memory."""
    if not ref or not hyp:
        return max(len(ref), len(hyp))
    a, b = _encode(ref, hyp)
    last = np.zeros(1, dtype=np.int64)
    for last in _dp_rows(a, b):  # noqa: B007 - only the final row is needed
        pass
    return int(last[-1])


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance between two sequences (strings, or lists of hashable items such as clusters):
    the least number of single-item insertions, deletions and substitutions turning ref into hyp."""
    if _rf_levenshtein is not None:
        return int(_rf_levenshtein.distance(ref, hyp))
    return _edit_distance_numpy(ref, hyp)


def align(
    ref: Sequence[Hashable],
    hyp: Sequence[Hashable],
    classify: Callable[[Any], Hashable] | None = char_class,
) -> list[tuple[str, int | None, int | None]]:
    """A minimum-cost alignment of ref to hyp as a list of (op, ref_index, hyp_index), in text order.

    op is "equal", "substitute", "delete" (ref item missing from hyp; hyp_index None) or "insert" (extra hyp
    item; ref_index None). The number of non-"equal" ops is always edit_distance(ref, hyp). Among the
    alignments with that many edits, the one with the fewest substitutions across classes (per `classify`,
    by default the CharClass of a character) is chosen, so that 'ា' read as 'ិx' is ា->ិ plus an inserted x,
    not ា->x plus an inserted ិ. Remaining ties are broken the same way every time: walking back from the end,
    a diagonal step (match or substitution) is preferred, then a deletion, then an insertion.
    """
    n, m = len(ref), len(hyp)
    a, b = _encode(ref, hyp)
    # Lexicographic cost (edits, cross-class substitutions) as one integer: an edit outweighs any number of
    # cross-class penalties, of which there are at most min(n, m).
    unit = min(n, m) + 1
    if classify is not None:
        cls_ids: dict[Hashable, int] = {}
        ca = np.fromiter((cls_ids.setdefault(classify(x), len(cls_ids)) for x in ref), np.int64, count=n)
        cb = np.fromiter((cls_ids.setdefault(classify(x), len(cls_ids)) for x in hyp), np.int64, count=m)
    else:
        ca, cb = np.zeros(n, np.int64), np.zeros(m, np.int64)

    def sub_cost(i: int) -> np.ndarray:
        diff = b != a[i - 1]
        return diff * unit + (diff & (cb != ca[i - 1]))

    d = np.vstack(list(_dp_rows(a, b, indel=unit, sub_cost=sub_cost)))
    ops: list[tuple[str, int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            same = a[i - 1] == b[j - 1]
            step = 0 if same else unit + int(ca[i - 1] != cb[j - 1])
            if d[i, j] == d[i - 1, j - 1] + step:
                ops.append(("equal" if same else "substitute", i - 1, j - 1))
                i, j = i - 1, j - 1
                continue
        if i > 0 and d[i, j] == d[i - 1, j] + unit:
            ops.append(("delete", i - 1, None))
            i -= 1
        else:
            ops.append(("insert", None, j - 1))
            j -= 1
    ops.reverse()
    return ops


# ------------------------------------------------------------------------------------------------------
# Set-level metrics
# ------------------------------------------------------------------------------------------------------


def nfc(text: str) -> str:
    """The only normalization evaluation applies: Unicode NFC."""
    return unicodedata.normalize("NFC", text)


def _check_pairs(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"got {len(refs)} references but {len(hyps)} hypotheses; they must pair up")
    if len(refs) == 0:
        raise ValueError("cannot score an empty reference set: CER is undefined with no reference lines")
    for k, (r, h) in enumerate(zip(refs, hyps, strict=True)):
        if not isinstance(r, str) or not isinstance(h, str):
            raise TypeError(f"line {k}: reference and hypothesis must be str, got {type(r)} and {type(h)}")


@dataclass(frozen=True)
class TextMetrics:
    """Metrics of a set of (reference, hypothesis) lines; see the module docstring for the definitions."""

    n_lines: int
    n_chars: int  # reference code points after NFC
    char_errors: int  # summed Levenshtein edits over code points
    cer: float
    char_accuracy: float
    sequence_accuracy: float
    cluster_cer: float
    n_clusters: int = 0  # reference orthographic clusters
    cluster_errors: int = 0  # summed Levenshtein edits over clusters

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(refs: Sequence[str], hyps: Sequence[str]) -> TextMetrics:
    """Score hypotheses against references, pooled over the whole set (see the module docstring)."""
    _check_pairs(refs, hyps)
    n_chars = char_errors = n_clusters = cluster_errors = exact = 0
    for r_raw, h_raw in zip(refs, hyps, strict=True):
        r, h = nfc(r_raw), nfc(h_raw)
        n_chars += len(r)
        exact += r == h
        if r == h:
            n_clusters += len(clusters(r))
            continue
        char_errors += edit_distance(r, h)
        rc = clusters(r)
        n_clusters += len(rc)
        cluster_errors += edit_distance(rc, clusters(h))
    if n_chars == 0:
        raise ValueError(
            f"cannot score {len(refs)} reference line(s) with no characters at all: CER is undefined"
        )
    cer = char_errors / n_chars
    return TextMetrics(
        n_lines=len(refs),
        n_chars=n_chars,
        char_errors=char_errors,
        cer=cer,
        char_accuracy=max(0.0, 1.0 - cer),
        sequence_accuracy=exact / len(refs),
        cluster_cer=cluster_errors / n_clusters,
        n_clusters=n_clusters,
        cluster_errors=cluster_errors,
    )


def level_key(level: Any) -> str:
    """The JSON key of a difficulty level: '1'..'5' ('unknown' for a line without one)."""
    return "unknown" if level is None else str(level)


def _level_order(key: str) -> tuple[int, int | str]:
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)


def score_by_level(refs: Sequence[str], hyps: Sequence[str], levels: Sequence[Any]) -> dict[str, TextMetrics]:
    """`score` applied to each difficulty level's lines: {level key: TextMetrics}, levels in ascending order.

    levels[k] is line k's level (an int 1..5 in generated datasets; keys are strings so that they survive
    JSON, see `level_key`). Each level is scored on its own, pooled over its lines, exactly as `score` does.
    """
    _check_pairs(refs, hyps)
    if len(levels) != len(refs):
        raise ValueError(f"got {len(refs)} lines but {len(levels)} difficulty levels; they must pair up")
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for r, h, lv in zip(refs, hyps, levels, strict=True):
        g = groups.setdefault(level_key(lv), ([], []))
        g[0].append(r)
        g[1].append(h)
    out: dict[str, TextMetrics] = {}
    for key in sorted(groups, key=_level_order):
        try:
            out[key] = score(*groups[key])
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"difficulty level {key}: {exc}") from exc
    return out


def code_point(ch: str) -> str:
    """'U+17D2' for a character, '' for the empty string (the missing side of a deletion or insertion)."""
    return f"U+{ord(ch):04X}" if ch else ""


def error_analysis(refs: Sequence[str], hyps: Sequence[str], top_k: int | None = 20) -> dict[str, Any]:
    """Where the errors are: each (NFC) pair is aligned (see `align`) and every edit is counted.

    Returns a JSON-ready dict:
      totals: n_lines, n_ref_chars, n_hyp_chars, char_errors, substitutions, deletions, insertions;
      per_class: {class: {ref_count, substitutions, deletions, insertions, errors, error_rate}} in CharClass
        order, for classes seen in a reference or an edit. Substitutions and deletions count against the class
        of the reference character, insertions against the class of the inserted character; errors is their
        sum (so the classes' errors add up to char_errors) and error_rate = errors / ref_count (None when the
        class never occurs in the references);
      confusions: the top_k most frequent (ref, hyp) edits, as dicts {ref, hyp, ref_code, hyp_code, kind,
        count}; a deletion has hyp "" and an insertion ref "". Ordered by count, then ref, then hyp;
      n_distinct_confusions: how many distinct (ref, hyp) edits there were in all.
    """
    _check_pairs(refs, hyps)
    ref_count: Counter[CharClass] = Counter()
    edits: dict[str, Counter[CharClass]] = {
        "substitutions": Counter(),
        "deletions": Counter(),
        "insertions": Counter(),
    }
    pairs: Counter[tuple[str, str]] = Counter()
    n_ref = n_hyp = 0
    for r_raw, h_raw in zip(refs, hyps, strict=True):
        r, h = nfc(r_raw), nfc(h_raw)
        n_ref += len(r)
        n_hyp += len(h)
        ref_count.update(char_class(ch) for ch in r)
        if r == h:
            continue
        for op, i, j in align(r, h):
            if op == "substitute":
                edits["substitutions"][char_class(r[i])] += 1
                pairs[(r[i], h[j])] += 1
            elif op == "delete":
                edits["deletions"][char_class(r[i])] += 1
                pairs[(r[i], "")] += 1
            elif op == "insert":
                edits["insertions"][char_class(h[j])] += 1
                pairs[("", h[j])] += 1

    per_class: dict[str, dict[str, Any]] = {}
    for cls in CharClass:
        counts = {kind: c[cls] for kind, c in edits.items()}
        errors = sum(counts.values())
        if not ref_count[cls] and not errors:
            continue
        per_class[cls.value] = {
            "ref_count": ref_count[cls],
            **counts,
            "errors": errors,
            "error_rate": errors / ref_count[cls] if ref_count[cls] else None,
        }

    ordered = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1]))
    if top_k is not None:
        ordered = ordered[: max(0, top_k)]
    confusions = [
        {
            "ref": ref,
            "hyp": hyp,
            "ref_code": code_point(ref),
            "hyp_code": code_point(hyp),
            "kind": "deletion" if not hyp else "insertion" if not ref else "substitution",
            "count": count,
        }
        for (ref, hyp), count in ordered
    ]
    totals = {kind: sum(c.values()) for kind, c in edits.items()}
    return {
        "n_lines": len(refs),
        "n_ref_chars": n_ref,
        "n_hyp_chars": n_hyp,
        "char_errors": sum(totals.values()),
        **totals,
        "per_class": per_class,
        "confusions": confusions,
        "n_distinct_confusions": len(pairs),
    }


# ------------------------------------------------------------------------------------------------------
# Latency
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyStats:
    """Per-call wall-clock latency in milliseconds (batch 1)."""

    ms_p50: float
    ms_p95: float
    ms_mean: float
    n_calls: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        if len(samples_ms) == 0:
            raise ValueError("no latency samples")
        x = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            ms_p50=float(np.percentile(x, 50)),
            ms_p95=float(np.percentile(x, 95)),
            ms_mean=float(x.mean()),
            n_calls=len(x),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(
    fn: Callable[[Any], Any], inputs: Sequence[Any], warmup: int = 3, repeats: int = 1
) -> dict[str, Any]:
    """Time fn(x) once per input (batch 1), `repeats` passes over inputs, after `warmup` untimed calls
    (cycling through inputs). Returns LatencyStats as a dict: ms_p50, ms_p95, ms_mean, n_calls."""
    if len(inputs) == 0:
        raise ValueError("measure_latency needs at least one input")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for k in range(max(0, warmup)):
        fn(inputs[k % len(inputs)])
    samples: list[float] = []
    for _ in range(repeats):
        for x in inputs:
            t0 = time.perf_counter()
            fn(x)
            samples.append((time.perf_counter() - t0) * 1000.0)
    return LatencyStats.from_samples(samples).to_dict()


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch and OpenCV on one thread inside the block (latency is measured that way), restored after."""
    import cv2
    import torch

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv_threads)
