"""Datasets: layout, determinism across worker counts, resume after a kill, extension, S3, splits."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.format import MANIFEST_FIELDS, DatasetError
from khmer_ocr.data.reader import Dataset
from khmer_ocr.data.writer import finalize_dataset, generate_dataset, prepare_dataset

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
        "from khmer_ocr.data.writer import generate_dataset; from tests.test_dataset import small_config; "
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


def test_a_dataset_regenerated_at_the_same_s3_uri_is_not_read_from_stale_cached_shards(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local copies of an s3:// dataset's shards are keyed by its URI and its manifest: the shards of a
    regenerated dataset (other offsets, other bytes) are downloaded anew."""
    from khmer_ocr import storage
    from khmer_ocr.data.reader import ShardReader

    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path / "cache"))
    uri = f"{s3_env}/datasets/regenerated"
    for seed in (11, 12):
        bucket, prefix = uri.removeprefix("s3://").split("/", 1)
        client = storage.s3_client()  # what a fresh S3 server, or a deleted prefix, leaves: nothing there
        for obj in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
        for _ in range(100):  # the server lists deleted objects for a moment
            if not storage.list_files(uri):
                break
            time.sleep(0.1)
        generate_dataset(small_config(seed=seed), uri, workers=1, progress=False)
        ds = Dataset(uri)
        reader = ShardReader(ds)
        for rec in ds.records[::23]:
            data = reader.read(rec)
            assert "sha256:" + hashlib.sha256(data).hexdigest() == rec["checksum"]
            assert reader.image(rec).shape == (rec["height"], rec["width"])
        reader.close()
    assert len(list((tmp_path / "cache" / "datasets").iterdir())) == 2


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
    skipped = [rec["skipped_pairs"] for rec in ds.records]  # refused (text, font) pairs before each sample
    assert all(isinstance(n, int) and n >= 0 for n in skipped)
    assert json.loads((dataset_dir / "card.json").read_text())["skipped_font_text_pairs"] == sum(skipped)


def test_manifest_errors_name_the_line(dataset_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(dataset_dir, bad)
    lines = (bad / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][:40]  # line 3 cut short
    (bad / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"manifest.jsonl line 3 is not valid JSON"):
        Dataset(bad)


def test_reader_refuses_shards_outside_the_dataset(dataset_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(dataset_dir, root)
    outside = tmp_path / "outside.tar"
    shutil.copy(root / "shards" / "shard-00000.tar", outside)
    records = [json.loads(x) for x in (root / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    for shard, message in ((str(outside), "not a relative path"), ("../outside.tar", "outside the dataset")):
        records[0]["shard"] = shard
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        (root / "manifest.jsonl").write_text(text, encoding="utf-8")
        with pytest.raises(DatasetError, match=rf"line 1 \(id 000000000\): shard .* is refused: {message}"):
            Dataset(root)
    records[0]["shard"] = "shards/shard-00000.tar"
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (root / "shards" / "shard-00000.tar").unlink()
    (root / "shards" / "shard-00000.tar").symlink_to(outside)
    with pytest.raises(DatasetError, match="a link out of the dataset folder"):
        Dataset(root)


def _tiny(**kw) -> DataConfig:
    return small_config(**{"num_samples": 40, "shard_size": 20, **kw})


def test_overwrite_deletes_only_a_dataset_of_this_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from khmer_ocr.cli import main

    # A folder with a config.yaml that is not a dataset: never deleted, from the library or the CLI.
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("lr: 0.1\n")
    (project / "train.py").write_text("print('my work')\n")
    with pytest.raises(DatasetError, match=r"--overwrite refused: .* is not a khmer-ocr dataset"):
        generate_dataset(_tiny(), project, overwrite=True, progress=False)
    args = ["generate", "--profile", "demo", "--num-samples", "40", "--no-validate", "--overwrite"]
    assert main([*args, "--out", str(project)]) == 2
    assert (project / "train.py").is_file() and (project / "config.yaml").is_file()

    # A real dataset with somebody's file in it: not deleted either.
    ds = tmp_path / "ds"
    generate_dataset(_tiny(), ds, workers=1, progress=False)
    (ds / "notes.txt").write_text("keep me\n")
    with pytest.raises(DatasetError, match=r"holds files that are not part of a dataset \(notes.txt\)"):
        generate_dataset(_tiny(seed=3), ds, overwrite=True, progress=False)
    (ds / "notes.txt").unlink()

    # Not the working directory or one of its parents, not a repository.
    monkeypatch.chdir(ds / "shards")
    with pytest.raises(DatasetError, match="current directory or one of its parents"):
        generate_dataset(_tiny(seed=3), ds, overwrite=True, progress=False)
    monkeypatch.chdir(tmp_path)
    (ds / ".git").mkdir()
    with pytest.raises(DatasetError, match="is a repository"):
        generate_dataset(_tiny(seed=3), ds, overwrite=True, progress=False)
    (ds / ".git").rmdir()

    # A dataset and nothing else: replaced.
    result = generate_dataset(_tiny(seed=3), ds, workers=1, overwrite=True, progress=False)
    assert result.generated == 40 and Dataset(ds).card["generator_config"]["seed"] == 3


def test_shrinking_or_writing_into_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    generate_dataset(_tiny(), ds, workers=1, progress=False)
    before = _files(ds)
    with pytest.raises(DatasetError, match=r"holds .* 40 lines; 20 would shrink it"):
        generate_dataset(_tiny(num_samples=20), ds, progress=False)  # would orphan shard 1
    with pytest.raises(DatasetError, match="30 would shrink it"):
        generate_dataset(_tiny(num_samples=30), ds, progress=False)  # would rewrite shard 1 smaller
    assert _files(ds) == before
    assert generate_dataset(_tiny(num_samples=60), ds, workers=1, progress=False).generated == 20  # extends

    other = tmp_path / "other"
    other.mkdir()
    (other / "photo.jpg").write_bytes(b"not mine")
    with pytest.raises(DatasetError, match="not empty and holds no khmer-ocr dataset"):
        generate_dataset(_tiny(), other, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["photo.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_dataset(_tiny(), empty, workers=1, progress=False).generated == 40


def test_overwrite_on_s3_and_a_changed_generator_are_refused(s3_env: str, tmp_path: Path) -> None:
    from khmer_ocr import storage

    out = f"{s3_env}/ds"
    generate_dataset(_tiny(), out, workers=1, progress=False)
    before = sorted(storage.list_files(storage.join(out, "shards")))
    with pytest.raises(DatasetError, match=r"--overwrite is not supported for s3:// outputs"):
        generate_dataset(_tiny(seed=3), out, overwrite=True, progress=False)
    assert sorted(storage.list_files(storage.join(out, "shards"))) == before
    assert Dataset(out).card["generator_config"]["seed"] == _tiny().seed  # untouched

    # shards from another generator revision cannot be resumed or extended: the bytes would differ; the
    # finished dataset itself is read as it is, by generate and by the DAG's steps (nothing rewritten)
    ds = tmp_path / "ds"
    first = generate_dataset(_tiny(), ds, workers=1, progress=False)
    identity = json.loads((ds / "generator.json").read_text())
    (ds / "generator.json").write_text(json.dumps({**identity, "revision": -1}))
    before = {p: p.stat().st_mtime_ns for p in ds.rglob("*") if p.is_file()}
    again = generate_dataset(_tiny(), ds, workers=1, progress=False)
    assert (again.version, again.num_samples, again.generated) == (first.version, 40, 0)
    assert prepare_dataset(_tiny(), ds) == [] and finalize_dataset(_tiny(), ds).version == first.version
    assert {p: p.stat().st_mtime_ns for p in ds.rglob("*") if p.is_file()} == before
    with pytest.raises(
        DatasetError, match=r"was generated by another generator .* cannot be resumed or extended"
    ):
        generate_dataset(_tiny(num_samples=60), ds, progress=False)
    assert len(Dataset(ds)) == 40
    result = generate_dataset(_tiny(num_samples=60), ds, workers=1, overwrite=True, progress=False)
    assert result.generated == 60 and json.loads((ds / "generator.json").read_text()) == identity


def test_sharded_generation_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    """The steps the Airflow data DAG maps (prepare / generate_shards / finalize), out of order or asked
    for what does not exist: each refuses with what to do."""
    from khmer_ocr.data.writer import generate_shards

    cfg, out = _tiny(), tmp_path / "ds"
    for step in (lambda: generate_shards(cfg, out, [0]), lambda: finalize_dataset(cfg, out)):
        with pytest.raises(DatasetError, match="is not prepared: call prepare_dataset first"):
            step()
    assert prepare_dataset(cfg, out) == [0, 1]
    with pytest.raises(DatasetError, match=r"no shards \[2, 5\] in a dataset of 2 shards"):
        generate_shards(cfg, out, [0, 2, 5])
    with pytest.raises(DatasetError, match=r"shards \[0, 1\] are not written yet: run generate_shards"):
        finalize_dataset(cfg, out)
    assert generate_shards(cfg, out, [1]) == 20
    with pytest.raises(DatasetError, match=r"shards \[0\] are not written yet"):
        finalize_dataset(cfg, out)
    with pytest.raises(DatasetError, match="generated with another config"):
        generate_shards(_tiny(seed=9), out, [0])
    assert generate_shards(cfg, out, [0, 1]) == 20 and prepare_dataset(cfg, out) == []
    assert len(Dataset(finalize_dataset(cfg, out).uri)) == 40


def test_shard_archives_are_the_bytes_tarfile_writes() -> None:
    import io
    import tarfile

    from khmer_ocr.data.tarshard import ShardTar

    files = [(f"{i:09d}.png", bytes([i % 251]) * (i * 37 % 2000)) for i in range(60)]
    files += [("a" * 100, b"x"), ("ក.png", b"y" * 513), ("dir/" + "x" * 96 + ".png", b"z")]
    ref = io.BytesIO()
    offsets = []
    with tarfile.open(fileobj=ref, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            offsets.append(tar.offset + tarfile.BLOCKSIZE)
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    shard = ShardTar(out)
    assert [shard.add(name, data) for name, data in files] == offsets
    shard.close()
    assert out.getvalue() == ref.getvalue()
