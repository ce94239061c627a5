"""Datasets: layout, determinism across worker counts, resume after a kill, extension, S3, splits."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.dataset import MANIFEST_FIELDS, Dataset, DatasetError, generate_dataset

FIELDS = set(MANIFEST_FIELDS)


def small_config(**kw) -> DataConfig:
    base = {"name": "t", "num_samples": 240, "shard_size": 60, "seed": 11, "test_fraction": 0.2}
    return DataConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "ds"
    generate_dataset(small_config(), out, workers=2, progress=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("card.json", "card.md")
    }


def test_layout_manifest_and_card(dataset_dir: Path) -> None:
    for name in ("manifest.jsonl", "card.json", "card.md", "config.yaml", "charset.json", "samples.png"):
        assert (dataset_dir / name).is_file(), name
    ds = Dataset(dataset_dir)
    assert len(ds) == 240 and all(set(r) >= FIELDS for r in ds.records)
    assert [r["id"] for r in ds.records] == sorted(r["id"] for r in ds.records)
    card = ds.card
    assert card["num_samples"] == 240 and card["version"].startswith("t-")
    assert card["charset_version"] == ds.charset.version
    assert sum(card["counts"]["split"].values()) == 240
    img = ds.image(ds.records[0])
    assert img.shape == (ds.records[0]["height"], ds.records[0]["width"])
    assert Image.open(dataset_dir / "samples.png").size[0] > 0


def test_splits_share_no_text_and_unseen_font_is_only_in_its_split(dataset_dir: Path) -> None:
    ds = Dataset(dataset_dir)
    train = {r["text"] for r in ds.split("train")}
    test = {r["text"] for r in ds.split("test") + ds.split("test_unseen_font")}
    assert ds.split("test_unseen_font") and ds.split("test") and ds.split("val")
    assert not train & test
    assert {r["font"] for r in ds.split("test_unseen_font")} == {"KhmerOSsiemreap"}
    assert "KhmerOSsiemreap" not in {r["font"] for r in ds.split("train") + ds.split("val")}
    reserved = {"Khmer Mondulkiri", "Khmer Busra", "Noto Serif Khmer"}
    assert not reserved & {r["font_family"] for r in ds.records}


def test_same_bytes_for_any_worker_count(dataset_dir: Path, tmp_path: Path) -> None:
    generate_dataset(small_config(), tmp_path / "one", workers=1, progress=False)
    assert _files(tmp_path / "one") == _files(dataset_dir)


def test_rerun_is_a_no_op_and_different_config_is_refused(dataset_dir: Path) -> None:
    before = _files(dataset_dir)
    result = generate_dataset(small_config(), dataset_dir, workers=2, progress=False)
    assert result.generated == 0 and _files(dataset_dir) == before
    with pytest.raises(DatasetError, match="another config"):
        generate_dataset(small_config(seed=12), dataset_dir, progress=False)


def test_extending_keeps_existing_shards(dataset_dir: Path, tmp_path: Path) -> None:
    bigger = tmp_path / "bigger"
    generate_dataset(small_config(num_samples=120), bigger, workers=2, progress=False)
    first = (bigger / "shards" / "shard-00000.tar").read_bytes()
    result = generate_dataset(small_config(), bigger, workers=2, progress=False)
    assert result.generated == 120
    assert (bigger / "shards" / "shard-00000.tar").read_bytes() == first
    assert _files(bigger) == _files(dataset_dir)


def test_killed_run_resumes_to_the_same_dataset(dataset_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    code = (
        "from khmer_ocr.data.dataset import generate_dataset; from tests.test_dataset import small_config; "
        f"generate_dataset(small_config(shard_size=20), {str(out)!r}, workers=1, progress=False)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=Path(__file__).parents[1], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "shards" / "shard-00002.jsonl").exists():
            assert proc.poll() is None, "generation ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "manifest.jsonl").exists()
    result = generate_dataset(small_config(shard_size=20), out, workers=2, progress=False)
    assert 0 < result.generated < 240
    reference = tmp_path / "reference"
    generate_dataset(small_config(shard_size=20), reference, workers=2, progress=False)
    assert _files(out) == _files(reference)


def test_s3_dataset_round_trip(s3_env: str, dataset_dir: Path) -> None:
    uri = f"{s3_env}/datasets/t"
    result = generate_dataset(small_config(), uri, workers=2, progress=False)
    local = Dataset(dataset_dir)
    remote = Dataset(uri)
    assert result.version == local.card["version"] == remote.card["version"]
    assert remote.records == local.records
    rec = remote.records[7]
    assert remote.image_bytes(rec) == local.image_bytes(rec)
    assert Image.open(io.BytesIO(remote.image_bytes(rec))).size == (rec["width"], rec["height"])
    again = generate_dataset(small_config(), uri, workers=2, progress=False)
    assert again.generated == 0


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a complete dataset"):
        Dataset(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.jsonl").write_text("{not json\n")
    with pytest.raises(DatasetError, match="not valid JSON"):
        Dataset(tmp_path / "bad")


def test_manifest_records_point_at_exact_png_bytes(dataset_dir: Path) -> None:
    import hashlib

    ds = Dataset(dataset_dir)
    for rec in ds.records[::17]:
        data = ds.image_bytes(rec)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert "sha256:" + hashlib.sha256(data).hexdigest() == rec["checksum"]
    assert json.loads((dataset_dir / "card.json").read_text())["skipped_font_text_pairs"] >= 0
