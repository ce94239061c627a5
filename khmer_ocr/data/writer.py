"""Writing a versioned dataset: parallel, resumable rendering of image shards, then the card, the sample grid
and, last, the manifest (the layout: docs/dataset-format.md). Where the files go is the sink's business
(khmer_ocr.data.sink: a local folder or an s3:// prefix).

A shard is done once its .jsonl is written (after its tar), so an interrupted run resumes at the first
unfinished shard and a re-run never duplicates a sample.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from khmer_ocr.config import from_dict, save_config, to_dict
from khmer_ocr.data.card import card_markdown, dataset_card, sample_grid_image
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.format import (
    CARD,
    CHARSET,
    CONFIG,
    GENERATOR,
    GRID,
    MANIFEST,
    DatasetError,
    shard_name,
    shard_ranges,
)
from khmer_ocr.data.generate import SampleFactory, generator_identity
from khmer_ocr.data.glyph_cache import save_glyph_cache
from khmer_ocr.data.sink import DatasetSink
from khmer_ocr.data.tarshard import ShardTar
from khmer_ocr.processes import forking, worker_pool
from khmer_ocr.script import default_charset

if TYPE_CHECKING:
    from khmer_ocr.data.pages import PageFactory

    Factory = SampleFactory | PageFactory  # a factory of text lines or of pages


@dataclass
class GenerateResult:
    uri: str
    version: str
    num_samples: int
    generated: int  # samples rendered by this run (the rest were resumed)
    seconds: float
    card: dict


def make_factory(cfg: DataConfig) -> Factory:
    """The sample factory of the config's kind: text lines, or whole pages (khmer_ocr.data.pages)."""
    if cfg.kind == "pages":
        from khmer_ocr.data.pages import PageFactory

        return PageFactory(cfg)
    if cfg.kind != "lines":
        raise DatasetError(f"kind {cfg.kind!r} is not a dataset kind: lines or pages")
    return SampleFactory(cfg)


def render_shard(
    factory: Factory, k: int, indices: range, tmp_dir: str, compress: int
) -> tuple[int, str, list[dict]]:
    """Render one shard into a local tar file; returns (k, its path, its records with offsets)."""
    tmp = Path(tmp_dir) / f"shard-{k:05d}.tar.{os.getpid()}"
    records = []
    with open(tmp, "wb") as f:
        tar = ShardTar(f)
        for i in indices:
            s = factory.make(i)
            png = s.png(compress)
            offset = tar.add(f"{s.id}.png", png)  # data follows its 512-byte header
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
        tar.close()
    save_glyph_cache()  # the clusters this shard drew first, for the next process
    return k, str(tmp), records


# A pool worker's factory: set once per worker process by its initializer, read by the shards it renders
# (a factory holds fonts and text models: built once per process, never sent with each task).
_worker_factory: Factory | None = None


def _init_worker(cfg_dict: dict, factory: Factory | None) -> None:
    """Pool initializer: a forked worker gets the parent's factory, a spawned one builds its own."""
    global _worker_factory
    _worker_factory = factory or make_factory(from_dict(DataConfig, cfg_dict))


def _render_in_worker(args: tuple[int, range, str, int]) -> tuple[int, str, list[dict]]:
    if _worker_factory is None:
        raise RuntimeError("_render_in_worker runs in a pool whose initializer is _init_worker")
    return render_shard(_worker_factory, *args)


def _yaml(cfg: DataConfig) -> str:
    with tempfile.NamedTemporaryFile("r", suffix=".yaml") as f:
        save_config(cfg, f.name)
        return Path(f.name).read_text(encoding="utf-8")


def _finished(cfg: DataConfig, sink: DatasetSink) -> GenerateResult | None:
    """The finished dataset of this config at the sink, as it is (whichever generator wrote it: nothing is
    rendered or rewritten), or None."""
    if (card := sink.finished_card(cfg)) is None:
        return None
    sink.check(cfg, finished=card)  # the same config, else DatasetError
    return GenerateResult(sink.uri, card["version"], card["num_samples"], 0, 0.0, card)


def _prepare(cfg: DataConfig, sink: DatasetSink, overwrite: bool) -> Factory:
    """Check that the sink can hold (or resume) this dataset, write its config, generator identity and
    charset; returns the factory (made here: it fails early, in the parent, on bad fonts or sources)."""
    if cfg.num_samples < 1 or cfg.shard_size < 1:
        raise DatasetError("num_samples and shard_size must be positive")
    sink.check(cfg, overwrite)
    sink.make_folder()
    factory = make_factory(cfg)
    charset_tmp = sink.tmp / CHARSET
    sink.write_text(CONFIG, _yaml(cfg))
    sink.write_text(GENERATOR, json.dumps(generator_identity()))
    default_charset().save(charset_tmp)
    sink.commit(charset_tmp, CHARSET)
    return factory


def _commit_shard(sink: DatasetSink, k: int, tmp: str, records: list[dict]) -> None:
    """Move a rendered shard into place: its tar first, then its .jsonl (which marks it done)."""
    sink.commit(Path(tmp), shard_name(k) + ".tar")
    part = sink.tmp / f"shard-{k:05d}.jsonl"
    part.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    sink.commit(part, shard_name(k) + ".jsonl")


def _finalize(
    cfg: DataConfig, sink: DatasetSink, done: dict[int, list[dict]], factory: Factory
) -> tuple[str, dict, int]:
    """Write the sample grid, the card and, last, the manifest (its presence marks the dataset complete);
    returns (version, card, number of lines)."""
    records = [r for k in sorted(done) for r in done[k]]
    manifest = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    version = f"{cfg.name}-{hashlib.sha256(manifest).hexdigest()[:12]}"
    card = dataset_card(cfg, version, records, default_charset(), factory)
    grid = sink.tmp / GRID
    sample_grid_image(sink.uri, records).save(grid, compress_level=1)  # a picture for people: fast deflate
    sink.commit(grid, GRID)
    sink.write_text(CARD, json.dumps(card, ensure_ascii=False, indent=1))
    sink.write_text("card.md", card_markdown(card))
    sink.write_bytes(MANIFEST, manifest)
    sink.drop_tmp()
    return version, card, len(records)


def generate_dataset(
    cfg: DataConfig, out: str | Path, workers: int = 0, overwrite: bool = False, progress: bool = True
) -> GenerateResult:
    """Generate (or resume, or extend) the dataset described by cfg at out (a folder or s3:// prefix); a
    finished one of this config is returned as it is."""
    sink = DatasetSink(out)
    if not overwrite and (finished := _finished(cfg, sink)) is not None:
        return finished
    start = time.perf_counter()
    factory = _prepare(cfg, sink, overwrite)
    ranges = shard_ranges(cfg)
    done = sink.done_shards({k: len(r) for k, r in ranges.items()})
    todo = [(k, r, str(sink.tmp), cfg.png_compress_level) for k, r in ranges.items() if k not in done]
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
    try:
        with contextlib.ExitStack() as stack:
            if workers == 1 or len(todo) <= 1:
                results = (render_shard(factory, *task) for task in todo)
            else:  # forked workers share the parent's factory as it is; spawned ones build their own
                inherited = factory if forking() else None
                pool = stack.enter_context(worker_pool(workers, _init_worker, (to_dict(cfg), inherited)))
                results = pool.imap_unordered(_render_in_worker, todo)
            for k, tmp, records in results:  # interrupted: the pool stops; finished shards stay (resume)
                _commit_shard(sink, k, tmp, records)
                done[k] = records
                generated += len(records)
                bar.update(len(records))
    finally:
        bar.close()
    version, card, n = _finalize(cfg, sink, done, factory)
    return GenerateResult(sink.uri, version, n, generated, time.perf_counter() - start, card)


# The same steps, split for orchestrators that spread one dataset's shards over separate tasks or machines
# (the Airflow DAG khmer_ocr_data): prepare_dataset once, generate_shards for each group of shard ids (in
# parallel, anywhere that can write to out), finalize_dataset once when every shard is written.
def prepare_dataset(cfg: DataConfig, out: str | Path, overwrite: bool = False) -> list[int]:
    """Check that out can hold (or resume, or extend) this dataset and write its config; returns the ids of
    the shards still to render (shard_ranges(cfg) lists them all)."""
    sink = DatasetSink(out)
    if not overwrite and _finished(cfg, sink) is not None:
        return []
    _prepare(cfg, sink, overwrite)
    sink.drop_tmp(remote_only=True)
    ranges = shard_ranges(cfg)
    done = sink.done_shards({k: len(r) for k, r in ranges.items()})
    return [k for k in ranges if k not in done]


def _prepared(cfg: DataConfig, sink: DatasetSink) -> dict[int, range]:
    """The shards' ranges of a dataset prepare_dataset prepared at the sink for this config."""
    if not sink.is_prepared():
        raise DatasetError(f"{sink.uri} is not prepared: call prepare_dataset first")
    sink.check(cfg)
    return shard_ranges(cfg)


def generate_shards(cfg: DataConfig, out: str | Path, shard_ids: list[int], progress: bool = False) -> int:
    """Render the shards shard_ids of a dataset prepared at out (one process; shards already written are
    skipped); returns the number of lines rendered."""
    sink = DatasetSink(out)
    ranges = _prepared(cfg, sink)
    unknown = sorted(set(shard_ids) - set(ranges))
    if unknown:
        raise DatasetError(f"no shards {unknown} in a dataset of {len(ranges)} shards")
    done = sink.done_shards({k: len(ranges[k]) for k in shard_ids})
    todo = [k for k in sorted(set(shard_ids)) if k not in done]
    if not todo:
        return 0
    factory = make_factory(cfg)
    generated = 0
    with tqdm(total=sum(len(ranges[k]) for k in todo), unit="line", disable=not progress) as bar:
        for k in todo:
            _, tmp, records = render_shard(factory, k, ranges[k], str(sink.tmp), cfg.png_compress_level)
            _commit_shard(sink, k, tmp, records)
            generated += len(records)
            bar.update(len(records))
    sink.drop_tmp(remote_only=True)
    return generated


def finalize_dataset(cfg: DataConfig, out: str | Path) -> GenerateResult:
    """Write the manifest, card and sample grid of a dataset whose shards are all written."""
    start = time.perf_counter()
    sink = DatasetSink(out)
    if sink.is_prepared() and (finished := _finished(cfg, sink)) is not None:
        return finished
    ranges = _prepared(cfg, sink)
    done = sink.done_shards({k: len(r) for k, r in ranges.items()})
    missing = sorted(set(ranges) - set(done))
    if missing:
        raise DatasetError(f"{sink.uri}: shards {missing} are not written yet: run generate_shards for them")
    factory = make_factory(cfg)  # the card lists its fonts
    version, card, n = _finalize(cfg, sink, done, factory)
    return GenerateResult(sink.uri, version, n, 0, time.perf_counter() - start, card)
