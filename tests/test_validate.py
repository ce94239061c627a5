"""Dataset validation (Great Expectations): a generated dataset passes; each corruption fails its check."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from khmer_ocr import storage
from khmer_ocr.data.config import DataConfig, FontConfig
from khmer_ocr.data.fonts import select_fonts
from khmer_ocr.data.format import DatasetError
from khmer_ocr.data.validation import validate_dataset
from khmer_ocr.data.validation.rules import BALANCE_HIGH, BALANCE_LOW, TOO_FEW_ROWS
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.script import is_normalized

CHECKS = [
    *(
        "has_rows",
        "manifest_fields",
        "charset_consistent",
        "label_not_null",
        "label_not_empty",
        "label_charset",
        "label_normalized",
    ),
    *("label_length", "image_height", "image_width", "shard_path", "file_present", "checksum_match"),
    "image_decodes",
    *("image_size_match", "image_not_blank", "font_balance", "difficulty_balance", "no_reserved_font"),
    *("unique_ids", "split_values", "splits_disjoint"),
]

# Eight Debian fonts: 400 lines give the 40 rows per font that font balance needs to be judged.
TEST_FONTS = [
    "KhmerOS",
    "KhmerOSbattambang",
    "KhmerOScontent",
    "KhmerOSsys",
    "KhmerOSmuollight",
    "KhmerOSbokor",
    "NotoSansKhmer-Regular",
    "NotoSansKhmer-Bold",
]


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real small dataset for the whole module; tests corrupt copies of it."""
    out = tmp_path_factory.mktemp("validate") / "ds"
    cfg = DataConfig(name="v", num_samples=400, shard_size=100, fonts=FontConfig(include=TEST_FONTS))
    generate_dataset(cfg, out, workers=2, progress=False)
    return out


@pytest.fixture
def copy(dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "ds"))


# ------------------------------------------------------------------------------------------------ corruptions
def _records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]


def _write(root: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    (root / "manifest.jsonl").write_text(text, encoding="utf-8")


def _edit(change: Callable[[list[dict]], None]) -> Callable[[Path], None]:
    """A corruption that edits manifest records in place."""

    def corrupt(root: Path) -> None:
        records = _records(root)
        change(records)
        _write(root, records)

    return corrupt


def _train(records: list[dict], k: int = 0) -> dict:
    return [r for r in records if r["split"] == "train"][k]


def _set_text(text: str) -> Callable[[Path], None]:
    return _edit(lambda rs: _train(rs).update(text=text))


def _share_test_text(records: list[dict]) -> None:
    test = next(r for r in records if r["split"] in ("test", "test_unseen_font"))
    _train(records)["text"] = test["text"]


def _one_font(records: list[dict]) -> None:
    train = [r for r in records if r["split"] == "train"]
    for r in train[: int(len(train) * 0.9)]:
        r["font"], r["font_family"] = train[0]["font"], train[0]["font_family"]


def _all_level_one(records: list[dict]) -> None:
    for r in records:
        r["difficulty"] = 1


def _drop_checksum(records: list[dict]) -> None:
    del records[0]["checksum"]


def _missing_shard(root: Path) -> None:
    (root / "shards" / "shard-00001.tar").unlink()


def _flip_bytes(root: Path) -> None:
    rec = _records(root)[5]
    shard = root / rec["shard"]
    data = bytearray(shard.read_bytes())
    for i in range(rec["offset"] + rec["size"] // 2, rec["offset"] + rec["size"] // 2 + 8):
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))


def _blank_image(root: Path) -> None:
    """Rewrite a shard with one image replaced by a blank PNG of the same size; fix the manifest to match."""
    records = _records(root)
    target = records[3]
    shard = root / target["shard"]
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    buf = io.BytesIO()
    Image.new("L", (target["width"], target["height"]), 247).save(buf, format="PNG")
    placed = {}
    with open(shard, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            data = buf.getvalue() if name == f"{target['id']}.png" else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            placed[name] = (
                tar.offset + tarfile.BLOCKSIZE,
                len(data),
                "sha256:" + hashlib.sha256(data).hexdigest(),
            )
            tar.addfile(info, io.BytesIO(data))
    for r in records:
        if r["shard"] == target["shard"]:
            r["offset"], r["size"], r["checksum"] = placed[f"{r['id']}.png"]
    _write(root, records)


def _shard_elsewhere(where: Callable[[Path, Path], str]) -> Callable[[Path], None]:
    """Copy shard 1 out of the dataset (its images stay valid) and point its records at the copy."""

    def corrupt(root: Path) -> None:
        outside = root.parent / "outside"
        outside.mkdir(exist_ok=True)
        shutil.copy(root / "shards" / "shard-00001.tar", outside / "shard.tar")
        records = _records(root)
        for r in records:
            if r["shard"] == "shards/shard-00001.tar":
                r["shard"] = where(root, outside / "shard.tar")
        _write(root, records)

    return corrupt


def _link_out(root: Path) -> None:
    """Replace shard 1 by a symbolic link to a copy outside the dataset."""
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    shard = root / "shards" / "shard-00001.tar"
    shutil.move(shard, outside / "shard.tar")
    shard.symlink_to(outside / "shard.tar")


def _edit_json(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def corrupt(root: Path) -> None:
        data = json.loads((root / name).read_text(encoding="utf-8"))
        change(data)
        (root / name).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    return corrupt


def _drop_charset_char(charset: dict) -> None:
    charset["chars"] = charset["chars"][:-1]  # content changed, version field left as it was


NOT_NORMALIZED = "ក\u17c6\u17b6"  # nikahit typed before the vowel AA
CORRUPTIONS = {
    # name: (corruption, the check that must fail, other checks it may also fail)
    "empty_label": (_set_text(""), "label_not_empty", {"label_length", "label_charset"}),
    "outside_charset": (_set_text("ក中"), "label_charset", set()),
    "not_normalized": (_set_text(NOT_NORMALIZED), "label_normalized", set()),
    "zwsp_inside": (_set_text("ក\u200bខ"), "label_normalized", {"label_charset"}),
    "too_long": (_set_text("ក" * 300), "label_length", set()),
    "wrong_height": (_edit(lambda rs: rs[0].update(height=32)), "image_height", {"image_size_match"}),
    "blank_image": (_blank_image, "image_not_blank", set()),
    "missing_shard": (_missing_shard, "file_present", set()),
    "checksum": (_flip_bytes, "checksum_match", {"image_decodes", "image_size_match", "image_not_blank"}),
    "font_imbalance": (_edit(_one_font), "font_balance", set()),
    "difficulty_imbalance": (_edit(_all_level_one), "difficulty_balance", set()),
    "reserved_font": (
        _edit(lambda rs: rs[3].update(font_family="Khmer Mondulkiri")),
        "no_reserved_font",
        set(),
    ),
    "duplicate_id": (_edit(lambda rs: rs[1].update(id=rs[0]["id"])), "unique_ids", set()),
    "text_in_train_and_test": (_edit(_share_test_text), "splits_disjoint", set()),
    "bad_split": (_edit(lambda rs: rs[2].update(split="training")), "split_values", set()),
    "no_rows": (lambda root: (root / "manifest.jsonl").write_text(""), "has_rows", set()),
    "missing_field": (_edit(_drop_checksum), "manifest_fields", {"checksum_match"}),
    "shard_parent_path": (
        _shard_elsewhere(lambda root, copy: "../outside/shard.tar"),
        "shard_path",
        {"file_present"},
    ),
    "shard_absolute_path": (_shard_elsewhere(lambda root, copy: str(copy)), "shard_path", {"file_present"}),
    "shard_link_out": (_link_out, "shard_path", {"file_present"}),
    "no_charset_file": (lambda root: (root / "charset.json").unlink(), "charset_consistent", set()),
    "charset_tampered": (_edit_json("charset.json", _drop_charset_char), "charset_consistent", set()),
    "card_charset_version": (
        _edit_json("card.json", lambda card: card.update(charset_version="khmer-0123456789")),
        "charset_consistent",
        set(),
    ),
}


# ------------------------------------------------------------------------------------------------ tests
def test_generated_dataset_passes(dataset: Path, tmp_path: Path) -> None:
    report = validate_dataset(dataset, report_dir=tmp_path / "report", progress=False)
    assert report.success, report.summary()
    assert [c.name for c in report.checks] == CHECKS
    assert all(c.success for c in report.checks)
    assert report.version and report.version.startswith("v-")
    assert report.stats["rows"] == 400 and report.stats["images"]["blank"] == 0
    assert report.summary().splitlines()[-1] == f"PASSED: all {len(CHECKS)} checks passed"

    saved = json.loads((tmp_path / "report" / "validation.json").read_text(encoding="utf-8"))
    assert saved["success"] is True and saved == report.to_dict()
    page = (tmp_path / "report" / "validation.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.count('class="pass"') == len(CHECKS)


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_fails_its_check(case: str, copy: Path) -> None:
    corrupt, check, also = CORRUPTIONS[case]
    corrupt(copy)
    report = validate_dataset(copy, progress=False)
    failed = {c.name for c in report.checks if not c.success}
    assert not report.success
    assert check in failed, report.summary()
    assert failed - {check} <= also, report.summary()
    details = report.check(check).details
    assert details and details in report.summary()
    assert f"FAILED {check}: " in report.summary()
    assert report.summary().splitlines()[-1] == f"FAILED: {len(failed)} of {len(CHECKS)} checks failed"


def test_failure_details_name_offenders(copy: Path) -> None:
    records = _records(copy)
    bad = _train(records)
    bad["text"] = "ក中"
    records[1]["id"] = records[0]["id"]
    _write(copy, records)
    (copy / "shards" / "shard-00002.tar").unlink()
    report = validate_dataset(copy, progress=False)
    assert report.check("label_charset").details.startswith(f"1 of 400 rows: {bad['id']} '中' U+4E2D")
    assert report.check("unique_ids").details == f"2 of 400 rows: {records[0]['id']}, {records[0]['id']}"
    missing = report.check("file_present").details
    assert missing.startswith("100 of 400 rows: 000000200 (shards/shard-00002.tar), 000000201 (")
    assert missing.endswith(", …")
    assert report.check("checksum_match").details == "all 300 rows ok (100 not applicable)"


def test_font_imbalance_names_fonts(copy: Path) -> None:
    _edit(_one_font)(copy)
    font = _train(_records(copy))["font"]
    details = validate_dataset(copy, progress=False).check("font_balance").details
    n = len(select_fonts(FontConfig(include=TEST_FONTS))[0])
    lo, hi = BALANCE_LOW / n, BALANCE_HIGH / n
    head = f" of {n} train fonts outside share of train rows {lo:.3f}..{hi:.3f}: {font} 0.9"
    outside = int(details.split(" ")[0])
    assert head in details and n // 2 < outside <= n, details  # the one font named first, most others starved


def test_shards_outside_the_dataset_are_never_read(copy: Path) -> None:
    """Validation names the records and reads nothing outside; the reader (training) refuses the manifest."""
    from khmer_ocr.data.reader import Dataset, record_bytes

    _shard_elsewhere(lambda root, copy: "../outside/shard.tar")(copy)
    report = validate_dataset(copy, progress=False)
    details = report.check("shard_path").details
    assert details.startswith("100 of 400 rows: 000000100 '../outside/shard.tar'"), details
    assert report.stats["images"]["missing"] == 100  # not read, although the bytes there are valid images
    with pytest.raises(
        DatasetError, match=r"line 101 \(id 000000100\): shard '../outside/shard.tar' is refused"
    ):
        Dataset(copy)
    record = _records(copy)[100]
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        record_bytes(str(copy), record)


def test_corruptions_are_what_they_claim() -> None:
    assert not is_normalized(NOT_NORMALIZED) and not is_normalized("ក\u200bខ")


def test_small_dataset_skips_balance(copy: Path) -> None:
    records = _records(copy)[:150]
    _one_font(records)  # imbalanced, but too few rows to tell
    _write(copy, records)
    report = validate_dataset(copy, progress=False)
    assert report.success, report.summary()
    assert report.check("font_balance").details == TOO_FEW_ROWS
    assert report.check("difficulty_balance").details == TOO_FEW_ROWS


def test_no_manifest_raises(copy: Path) -> None:
    (copy / "manifest.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"is not a complete dataset: no manifest\.jsonl"):
        validate_dataset(copy, progress=False)


def test_s3_dataset_and_report(dataset: Path, s3_env: str) -> None:
    uri = storage.join(s3_env, "datasets", "v")
    for name in storage.list_files(dataset):
        storage.put_file(dataset / name, storage.join(uri, name))
    report = validate_dataset(uri, report_dir=uri, progress=False)
    assert report.success, report.summary()
    assert json.loads(storage.read_text(storage.join(uri, "validation.json")))["dataset"] == uri
    assert "<table>" in storage.read_text(storage.join(uri, "validation.html"))

    storage.s3_client().delete_object(
        Bucket=s3_env.removeprefix("s3://"), Key="datasets/v/shards/shard-00003.tar"
    )
    report = validate_dataset(uri, progress=False)
    assert {c.name for c in report.checks if not c.success} == {"file_present"}


def test_font_balance_waits_for_enough_rows_per_font(tmp_path: Path) -> None:
    """With every installed font, 400 lines are too few to judge each font's share: said, not failed."""
    from khmer_ocr.data.validation.rules import MIN_ROWS_PER_FONT

    out = tmp_path / "all-fonts"
    generate_dataset(DataConfig(name="a", num_samples=400, shard_size=200), out, workers=2, progress=False)
    n = len(select_fonts(FontConfig())[0])
    assert MIN_ROWS_PER_FONT * n > 400  # the premise: many fonts installed (make setup adds the packs)
    check = validate_dataset(out, progress=False).check("font_balance")
    assert check.success and "per font" in check.details


def test_image_statistics_from_the_histogram_match_numpy() -> None:
    from khmer_ocr.data.validation.images import gray_stats

    rng = np.random.default_rng(0)
    for k in range(200):
        h, w = int(rng.integers(1, 60)), int(rng.integers(1, 700))
        if k % 3 == 0:
            gray = rng.integers(0, 256, (h, w)).astype(np.uint8)
        elif k % 3 == 1:
            gray = np.clip(rng.normal(200, 20, (h, w)), 0, 255).astype(np.uint8)
        else:
            gray = np.full((h, w), int(rng.integers(256)), np.uint8)
            gray[int(rng.integers(h)), int(rng.integers(w))] = 0
        ref = gray.astype(np.float64)
        p1, p99 = np.percentile(ref, [1, 99])
        std, contrast = gray_stats(gray)
        assert contrast == pytest.approx(p99 - p1, abs=1e-9)
        assert std == pytest.approx(ref.std(), abs=1e-9)


@pytest.mark.timeout(180)
def test_validation_and_generation_pools_end_under_a_sigterm_handler(dataset: Path, tmp_path: Path) -> None:
    """An Airflow task installs a SIGTERM handler; forked pool workers inherited it and swallowed the SIGTERM
    of Pool.terminate, so validating inside a DAG task hung for ever (seen in `dag.test`)."""
    import signal

    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        assert validate_dataset(dataset, progress=False, workers=2).success
        out = tmp_path / "gen"
        cfg = DataConfig(name="sig", num_samples=120, shard_size=40)
        assert generate_dataset(cfg, out, workers=2, progress=False).num_samples == 120
    finally:
        signal.signal(signal.SIGTERM, previous)
