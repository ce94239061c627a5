"""Reading a generated dataset (local folder or s3:// prefix): the manifest's records, the card and charset,
and each record's image, by a ranged read (Dataset) or from whole shards kept open (ShardReader, for
training and evaluation, which read many images of the same shards). Training, evaluation and validation
all read datasets through this module.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from khmer_ocr import storage
from khmer_ocr.cache import cache_dir
from khmer_ocr.data.format import CARD, CHARSET, MANIFEST, DatasetError, shard_problem, shard_uri
from khmer_ocr.script import Charset


def record_bytes(uri: str, rec: dict) -> bytes:
    """The encoded image of one manifest record: a ranged read from its shard (local or s3://), which must
    lie inside the dataset."""
    return storage.read_bytes(shard_uri(uri, rec["shard"]), (int(rec["offset"]), int(rec["size"])))


def decode_gray(data: bytes, rec: dict | None = None) -> np.ndarray:
    """A grayscale uint8 array from a record's encoded image; ValueError naming the record if it does not
    decode. The one decoder of dataset images (the sample grid, Dataset.image, ShardReader)."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) if data else None
    if img is None:
        raise ValueError(f"record {rec['id'] if rec else '?'}: image does not decode")
    return img


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
        # what the bytes are: a dataset regenerated at one place has another manifest (offsets, checksums)
        self.manifest_digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
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
    def kind(self) -> str:
        """The dataset's kind, lines or pages: the generator config's in the card; a manifest whose records
        carry their lines' boxes (no card says otherwise) is a page dataset."""
        try:
            kind = self.card.get("generator_config", {}).get("kind")
        except storage.StorageError:
            kind = None
        if kind:
            return str(kind)
        return "pages" if self.records and "lines" in self.records[0] else "lines"

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


class ShardReader:
    """Reads image bytes by (shard, offset, size); shards of s3:// datasets are downloaded once and cached."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._files: dict[str, object] = {}
        self._local_root: Path | None = None if storage.is_s3(dataset.uri) else Path(dataset.uri)

    def _local(self, shard: str) -> Path:
        if self._local_root is not None:
            return self._local_root / shard
        # keyed by the place and the manifest: shards of a dataset regenerated at the same URI are new files
        ident = f"{self.dataset.uri}\n{self.dataset.manifest_digest}"
        key = hashlib.sha256(ident.encode()).hexdigest()[:16]
        path = cache_dir() / "datasets" / key / shard
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            storage.get_file(storage.join(self.dataset.uri, shard), path)  # atomic
        return path

    def read(self, rec: dict) -> bytes:
        f = self._files.get(rec["shard"])
        if f is None:
            f = self._files[rec["shard"]] = open(self._local(rec["shard"]), "rb")  # noqa: SIM115
        f.seek(int(rec["offset"]))
        return f.read(int(rec["size"]))

    def image(self, rec: dict) -> np.ndarray:
        return decode_gray(self.read(rec), rec)

    def close(self) -> None:
        """Close the shard files this reader opened."""
        for f in self._files.values():
            f.close()
        self._files = {}

    def __del__(self) -> None:  # readers live as long as their datasets: close with them
        self.close()

    def __getstate__(self) -> dict:  # open files do not cross process boundaries
        return {**self.__dict__, "_files": {}}
