"""What a dataset's rows must look like: the limits of the checks, and the rules read from the dataset's own
config and card (image height, widths, text lengths, difficulty mix, reserved fonts, train fonts, charset)."""

from __future__ import annotations

from dataclasses import dataclass

from khmer_ocr import storage
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.format import CARD, CHARSET, CONFIG, MANIFEST_FIELDS
from khmer_ocr.data.reader import Dataset
from khmer_ocr.script import Charset, default_charset

REQUIRED_FIELDS = MANIFEST_FIELDS
PAGE_FIELDS = ("style", "lines")  # what a record of a page dataset (kind pages) has besides
PAGE_SIDES = (64, 8192)  # a page image's height and width, px
TEST_SPLITS = ("test", "test_unseen_font")
MIN_WIDTH = 8
DEFAULT_MAX_TEXT_LENGTH = 200  # when the generator config (and so the level lengths) cannot be read
MIN_BALANCE_ROWS = 200  # below this, shares are too noisy to judge balance
# fonts are judged only with this many train-font rows per font expected (39 fonts: 1,560 rows); fewer
# leave a share at the mercy of chance, the more so for fonts that cannot shape every line (no Latin)
MIN_ROWS_PER_FONT = 40
BALANCE_LOW, BALANCE_HIGH = 0.25, 4.0  # allowed share, as a multiple of the expected share
TOO_FEW_ROWS = "too few rows to judge balance"


@dataclass(frozen=True)
class Rules:
    """What the dataset's own config and card say its rows must look like."""

    image_height: int
    max_width: int
    max_text_length: int
    difficulty_weights: dict[int, float]  # normalized to sum 1
    reserved_families: tuple[str, ...]
    train_fonts: tuple[str, ...]  # fonts with role "train" in the card (empty when unknown)
    charset: Charset
    charset_note: str
    kind: str = "lines"  # lines, or pages: one page image per record, text = its lines joined by newlines

    @property
    def fields(self) -> tuple[str, ...]:
        return (*REQUIRED_FIELDS, *PAGE_FIELDS) if self.kind == "pages" else REQUIRED_FIELDS


def read_rules(ds: Dataset) -> tuple[Rules, dict]:
    import yaml

    card: dict = {}
    if storage.exists(storage.join(ds.uri, CARD)):
        try:
            card = ds.card
        except (storage.StorageError, ValueError):
            card = {}
    cfg: dict = {}
    try:
        cfg = yaml.safe_load(storage.read_text(storage.join(ds.uri, CONFIG))) or {}
    except (storage.StorageError, yaml.YAMLError):
        cfg = {}
    if not isinstance(cfg, dict) or not cfg:
        cfg = card.get("generator_config") or {}
    default = DataConfig()
    lengths = [lv.get("length") for lv in cfg.get("levels") or [] if isinstance(lv, dict)]
    lengths = [int(x[1]) for x in lengths if isinstance(x, list | tuple) and len(x) == 2]
    weights = {int(k): float(v) for k, v in (cfg.get("difficulty") or default.difficulty).items()}
    kind = str(cfg.get("kind") or "lines")
    if kind == "pages":  # a page's difficulty is its style's level
        from khmer_ocr.data.pages import STYLE_LEVEL

        styles = (cfg.get("pages") or {}).get("styles") or default.pages.styles
        weights = {STYLE_LEVEL[k]: float(v) for k, v in styles.items() if k in STYLE_LEVEL}
    total = sum(weights.values()) or 1.0
    fonts_cfg = cfg.get("fonts") or {}
    if "reserved_families" in fonts_cfg:
        reserved = fonts_cfg["reserved_families"] or []
    else:
        reserved = card.get("reserved_font_families", default.fonts.reserved_families)
    try:
        charset, note = ds.charset, "charset.json"
    except (storage.StorageError, ValueError, KeyError, TypeError) as exc:
        charset, note = default_charset(), f"default charset ({CHARSET} unreadable: {exc})"
    rules = Rules(
        image_height=int(cfg.get("image_height", card.get("image_height", default.image_height))),
        max_width=int(cfg.get("max_width", default.max_width)),
        max_text_length=max(lengths) if lengths else DEFAULT_MAX_TEXT_LENGTH,
        difficulty_weights={k: v / total for k, v in sorted(weights.items())},
        reserved_families=tuple(reserved),
        train_fonts=tuple(f["name"] for f in card.get("fonts", []) if f.get("role") == "train"),
        charset=charset,
        charset_note=note,
        kind=kind,
    )
    return rules, card
