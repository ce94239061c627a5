"""The frames the expectation suites run on: one row per record (manifest fields, image statistics and
derived columns), one row per train font and difficulty level (balance), one row per fact about the
dataset's own files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from khmer_ocr.data.format import CARD, CHARSET, shard_problem
from khmer_ocr.data.validation.images import IMAGE_COLUMNS
from khmer_ocr.data.validation.rules import (
    BALANCE_HIGH,
    BALANCE_LOW,
    PAGE_FIELDS,
    REQUIRED_FIELDS,
    TEST_SPLITS,
    Rules,
)
from khmer_ocr.script import normalize


def isnull(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _page_lines_problem(rec: dict, image: dict) -> str | None:
    """Why a page record's `lines` do not describe its image (None when they do): a non-empty list of
    {"box": [x0, y0, x1, y1], "text"} with each box non-empty and inside the image, and the texts joined
    by newlines equal to the record's text."""
    lines = rec.get("lines")
    if not isinstance(lines, list) or not lines:
        return "no lines"
    w = image.get("decoded_width") or rec.get("width")
    h = image.get("decoded_height") or rec.get("height")
    texts = []
    for k, ln in enumerate(lines):
        box = ln.get("box") if isinstance(ln, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) for v in box)):
            return f"line {k}: no box of 4 integers"
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 and 0 <= y0 < y1) or (w and x1 > w) or (h and y1 > h):
            return f"line {k}: box {box} is empty or outside the {w}x{h} image"
        if not isinstance(ln.get("text"), str) or not ln["text"]:
            return f"line {k}: no text"
        texts.append(ln["text"])
    if "\n".join(texts) != rec.get("text"):
        return "the lines' texts joined by newlines differ from the text"
    return None


def rows_frame(records: list[dict], images: list[dict], root: Path | None = None, kind: str = "lines"):
    import pandas as pd

    pages = kind == "pages"
    fields = (*REQUIRED_FIELDS, *PAGE_FIELDS) if pages else REQUIRED_FIELDS
    df = pd.DataFrame.from_records(records)
    for name in fields:
        if name not in df.columns:
            df[name] = None
    problems = {
        s: shard_problem(s, root)
        for s in {r.get("shard") for r in records if isinstance(r.get("shard"), str)}
    }
    df["shard_inside"] = pd.Series(
        [
            None if isnull(r.get("shard")) else problems.get(r.get("shard"), "not a path") is None
            for r in records
        ],
        index=df.index,
        dtype=object,
    )
    df["_row"] = np.arange(len(df))
    df["fields_complete"] = df[list(fields)].notna().all(axis=1)
    df["id"] = df["id"].map(lambda x: None if isnull(x) else str(x))
    df["text"] = df["text"].map(lambda t: t if isinstance(t, str) else None)

    def norm(t: object) -> str | None:  # a page's text: each of its lines normalized
        if not isinstance(t, str):
            return None
        return "\n".join(normalize(ln) for ln in t.split("\n")) if pages else normalize(t)

    df["text_normalized"] = df["text"].map(norm)
    # the texts that decide splits: a line's text; each line of a page
    units = df["text"].map(lambda t: (t.split("\n") if pages else [t]) if isinstance(t, str) else [])
    train = {u for us in units[df["split"] == "train"] for u in us}
    test = {u for us in units[df["split"].isin(TEST_SPLITS)] for u in us}
    shared = train & test
    df["text_in_train_and_test"] = df["split"].isin(("train", *TEST_SPLITS)) & units.map(
        lambda us: any(u in shared for u in us)
    )
    df["longest_line"] = units.map(lambda us: max((len(u) for u in us), default=0))
    if pages:
        problems = [_page_lines_problem(r, im) for r, im in zip(records, images, strict=True)]
        df["lines_problem"] = pd.Series(problems, index=df.index, dtype=object)
        df["lines_ok"] = pd.Series([p is None for p in problems], index=df.index, dtype=object)
    for col in IMAGE_COLUMNS:
        df[col] = pd.Series([im.get(col) for im in images], index=df.index, dtype=object)
    return df


def balance_frame(df, rules: Rules):
    """One row per train font and per difficulty level: its share and the share expected of it."""
    import pandas as pd

    rows: list[dict] = []
    train = df[df["split"] == "train"]
    if train.empty:  # an evaluation-only set (DataConfig.splits): its val/test lines use the train fonts
        train = df[df["split"] != "test_unseen_font"]
    counts = train["font"].value_counts()
    fonts = list(dict.fromkeys([*rules.train_fonts, *map(str, counts.index)]))
    n = len(rules.train_fonts) or len(counts)
    for font in fonts:
        share = float(counts.get(font, 0)) / max(len(train), 1)
        rows.append(
            {
                "id": f"font {font}",
                "kind": "font",
                "value": font,
                "rows": int(counts.get(font, 0)),
                "share": share,
                "expected": 1 / n,
                "font_share": share,
                "difficulty_ratio": None,
            }
        )
    levels = pd.to_numeric(df["difficulty"], errors="coerce").value_counts()
    observed = {int(k): int(v) for k, v in levels.items() if not math.isnan(k)}
    for level in sorted(set(rules.difficulty_weights) | set(observed)):
        w = rules.difficulty_weights.get(level, 0.0)
        share = observed.get(level, 0) / max(len(df), 1)
        ratio = share / w if w > 0 else (1.0 if share == 0 else math.inf)
        rows.append(
            {
                "id": f"difficulty {level}",
                "kind": "difficulty",
                "value": str(level),
                "rows": observed.get(level, 0),
                "share": share,
                "expected": w,
                "font_share": None,
                "difficulty_ratio": ratio,
            }
        )
    frame = pd.DataFrame.from_records(
        rows, columns=["id", "kind", "value", "rows", "share", "expected", "font_share", "difficulty_ratio"]
    )
    # Over-represented groups first (largest first), then under-represented ones (smallest first): the few
    # offenders named in a failure are then the ones that matter most.
    ratio = frame["share"].to_numpy(float) / np.maximum(frame["expected"].to_numpy(float), 1e-12)
    order = np.where(ratio > BALANCE_HIGH, -ratio, np.where(ratio < BALANCE_LOW, 1e6 + ratio, 2e6))
    frame = frame.assign(_off=order).sort_values(["kind", "_off"], ascending=[False, True], kind="stable")
    frame = frame.drop(columns="_off").reset_index(drop=True)
    frame["_row"] = np.arange(len(frame))
    frame["font_share"] = frame["font_share"].astype(float)
    frame["difficulty_ratio"] = frame["difficulty_ratio"].astype(float)
    return frame, n


def files_frame(rules: Rules, card: dict, card_error: str | None):
    """One row per fact about the dataset's own files that training relies on: charset.json present and
    self-consistent, the card readable and naming the same charset version."""
    import pandas as pd

    charset_ok = rules.charset_note == CHARSET
    rows = [
        {
            "id": CHARSET,
            "ok": charset_ok,
            "problem": "" if charset_ok else rules.charset_note.removeprefix("default charset ")[1:-1],
        }
    ]
    if card_error is not None:
        rows.append({"id": CARD, "ok": False, "problem": card_error})
    else:
        named = card.get("charset_version")
        same = charset_ok and named == rules.charset.version
        problem = (
            ""
            if same
            else f"charset_version {named!r}, {CHARSET} is "
            + (repr(rules.charset.version) if charset_ok else "unreadable")
        )
        rows.append({"id": f"{CARD} charset_version", "ok": same, "problem": problem})
    frame = pd.DataFrame.from_records(rows, columns=["id", "ok", "problem"])
    frame["ok"] = frame["ok"].astype(object)
    frame["_row"] = np.arange(len(frame))
    return frame
