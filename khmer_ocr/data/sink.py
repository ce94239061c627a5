"""Where a dataset is written: DatasetSink, the one owner of an output's local-or-S3 decision.

Files are made in a local temporary folder (<out>/shards/.tmp, or a fresh temporary folder for an s3://
output) and committed into place: renamed into the folder, or uploaded with a checksum. The sink also says
what may be written at the output: a new or empty place, or a dataset this config resumes or extends; with
overwrite, only a local folder that holds a khmer-ocr dataset and nothing else is deleted first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from khmer_ocr import storage
from khmer_ocr.config import from_dict, to_dict
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.format import (
    CARD,
    CONFIG,
    DATASET_FILES,
    GENERATOR,
    MANIFEST,
    SHARD_FILE,
    DatasetError,
    shard_name,
    shard_ranges,
)
from khmer_ocr.data.generate import generator_identity


class DatasetSink:
    """The output of a dataset being written: a local folder or an s3:// prefix."""

    def __init__(self, uri: str | Path) -> None:
        self.uri = str(uri)
        self.remote = storage.is_s3(self.uri)
        self._tmp: Path | None = None

    def join(self, name: str) -> str:
        """The location of a file of the dataset (a path, or an s3:// URI)."""
        return storage.join(self.uri, name)

    # ---------------------------------------------------------------------------------------- writing
    @property
    def tmp(self) -> Path:
        """The local folder files are made in before they are committed (created on first use)."""
        if self._tmp is None:
            root = (
                Path(tempfile.mkdtemp(prefix="khmer-ocr-"))
                if self.remote
                else Path(self.uri, "shards", ".tmp")
            )
            root.mkdir(parents=True, exist_ok=True)
            self._tmp = root
        return self._tmp

    def drop_tmp(self, remote_only: bool = False) -> None:
        """Delete the temporary folder (remote_only: only an s3:// output's, which no other task shares)."""
        if self._tmp is not None and (self.remote or not remote_only):
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def commit(self, local: Path, name: str) -> None:
        """Put a finished local file into place as the dataset's file `name` (renamed, or uploaded and
        deleted)."""
        uri = self.join(name)
        if self.remote:
            storage.put_file(local, uri)
            local.unlink()
        else:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            os.replace(local, uri)

    def write_text(self, name: str, text: str) -> None:
        storage.write_text(self.join(name), text)

    def write_bytes(self, name: str, data: bytes) -> None:
        storage.write_bytes(self.join(name), data)

    def make_folder(self) -> None:
        """A local output: create it (with shards/) and check that it can be written."""
        if self.remote:
            return
        try:
            Path(self.uri, "shards").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatasetError(f"cannot write to {self.uri}: {exc.strerror}") from exc
        if not os.access(Path(self.uri), os.W_OK):
            raise DatasetError(f"cannot write to {self.uri}: permission denied")

    # ---------------------------------------------------------------------------------------- reading
    def done_shards(self, expected: dict[int, int]) -> dict[int, list[dict]]:
        """The records of the shards already written, of those expected ({shard id: number of lines}): a
        shard is done when its tar and its .jsonl (written last) are there with every line."""
        done: dict[int, list[dict]] = {}
        names = set(storage.list_files(self.join("shards")))
        for k, n in expected.items():
            part = f"shard-{k:05d}"
            if f"{part}.jsonl" in names and f"{part}.tar" in names:
                recs = [
                    json.loads(x) for x in storage.read_text(self.join(shard_name(k) + ".jsonl")).splitlines()
                ]
                if len(recs) == n:
                    done[k] = recs
        return done

    def finished_card(self, cfg: DataConfig) -> dict | None:
        """The card of a finished dataset of cfg's size here (its manifest, card and every shard written),
        else None. Callers check the config first (check)."""
        if not (storage.exists(self.join(MANIFEST)) and storage.exists(self.join(CARD))):
            return None
        ranges = shard_ranges(cfg)
        if len(self.done_shards({k: len(r) for k, r in ranges.items()})) != len(ranges):
            return None
        try:
            return json.loads(storage.read_text(self.join(CARD)))
        except ValueError:  # a damaged card: finalizing again rewrites it
            return None

    def is_prepared(self) -> bool:
        """Whether a dataset's config is there (prepare_dataset wrote it)."""
        return storage.exists(self.join(CONFIG))

    # ------------------------------------------------------------------------------------------ checks
    def check(self, cfg: DataConfig, overwrite: bool = False, finished: dict | None = None) -> None:
        """Refuse to write here unless it is empty or a dataset this config resumes or extends (a smaller
        num_samples would shrink it and orphan shards; another generator's shards are only read, finished);
        with overwrite, delete a dataset of this project first. finished: the card finished_card(cfg) gave,
        when the caller has it (else it is read again where it matters)."""
        out = self.uri
        if not self.remote and Path(out).exists() and not Path(out).is_dir():
            raise DatasetError(f"{out} is a file, not a dataset folder")
        if not self.is_prepared():
            if not self._is_empty():
                raise DatasetError(
                    f"{out} is not empty and holds no khmer-ocr dataset: choose a new or empty --out"
                )
            return
        if overwrite:
            self._check_deletable()
            shutil.rmtree(out)
            return
        if (why := self._not_a_dataset()) is not None:
            raise DatasetError(f"{out} is not a khmer-ocr dataset ({why}): choose a new or empty --out")
        import yaml

        old = from_dict(DataConfig, yaml.safe_load(storage.read_text(self.join(CONFIG))))
        if _fingerprint(old) != _fingerprint(cfg):
            raise DatasetError(
                f"{out} holds a dataset generated with another config; choose a new --out, or pass "
                "--overwrite"
            )
        gen_uri = self.join(GENERATOR)
        old_gen = json.loads(storage.read_text(gen_uri)) if storage.exists(gen_uri) else None
        if old_gen != generator_identity() and (
            cfg.num_samples != old.num_samples or (finished or self.finished_card(cfg)) is None
        ):  # a finished dataset is read as it is; only rendering more would mix two generators' bytes
            raise DatasetError(
                f"{out} was generated by another generator ({old_gen}, now {generator_identity()}); its "
                "shards cannot be resumed or extended: choose a new --out, or pass --overwrite"
            )
        shards = {int(m[1]) for n in storage.list_files(self.join("shards")) if (m := SHARD_FILE.match(n))}
        n_shards = len(shard_ranges(cfg))
        if cfg.num_samples < old.num_samples or any(k >= n_shards for k in shards):
            raise DatasetError(
                f"{out} holds (or was being extended to) {old.num_samples} lines; {cfg.num_samples} would "
                "shrink it and leave shards behind: give at least as many (a larger number extends it), "
                "choose a new --out, or pass --overwrite"
            )

    def _is_empty(self) -> bool:
        """Nothing here but, at most, the empty shards/ folder (or shards/.tmp) an interrupted start left."""
        names = storage.list_files(self.uri)
        if not self.remote and Path(self.uri).is_dir():
            names += [p.name for p in Path(self.uri).iterdir() if p.name != "shards"]
        return all(n.startswith("shards/.tmp/") for n in names)

    def _not_a_dataset(self) -> str | None:
        """Why this is not a dataset of this project (None when it is): it must hold a config.yaml that is a
        data config and a generator.json written by khmer-ocr's generator."""
        import yaml

        try:
            gen = json.loads(storage.read_text(self.join(GENERATOR)))
            cfg = yaml.safe_load(storage.read_text(self.join(CONFIG)))
        except (storage.StorageError, OSError, ValueError, yaml.YAMLError) as exc:
            return f"no readable {GENERATOR} and {CONFIG} ({exc})"
        if not isinstance(gen, dict) or "revision" not in gen:
            return f"its {GENERATOR} is not khmer-ocr's"
        try:
            from_dict(DataConfig, cfg)
        except Exception as exc:  # ConfigError, TypeError, ...: not our data config
            return f"its {CONFIG} is not a khmer-ocr data config ({exc})"
        return None

    def _check_deletable(self) -> None:
        """Refuse --overwrite unless this is a local dataset folder of this project and nothing else."""
        out = self.uri
        if self.remote:
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
        if (why := self._not_a_dataset()) is not None:
            raise DatasetError(f"--overwrite refused: {out} is not a khmer-ocr dataset: {why}")
        if unexpected := _unexpected_entries(root):
            shown = ", ".join(unexpected[:5]) + (", ..." if len(unexpected) > 5 else "")
            raise DatasetError(
                f"--overwrite refused: {out} holds files that are not part of a dataset ({shown}); move them "
                "or delete the folder yourself"
            )


def _fingerprint(cfg: DataConfig) -> str:
    """What must match to resume: everything but num_samples (a dataset can be extended)."""
    d = to_dict(cfg)
    d.pop("num_samples")
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _unexpected_entries(root: Path) -> list[str]:
    """Entries of a local folder that a dataset of this project does not hold."""
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name == "shards" and entry.is_dir() and not entry.is_symlink():
            for shard in sorted(entry.iterdir()):
                if shard.name != ".tmp" and not (SHARD_FILE.match(shard.name) and shard.is_file()):
                    out.append(f"shards/{shard.name}")
        elif entry.name not in DATASET_FILES or not entry.is_file() or entry.is_symlink():
            out.append(entry.name)
    return out
