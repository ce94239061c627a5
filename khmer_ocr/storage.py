"""One storage API for local paths and ``s3://bucket/key`` URIs.

S3 access goes through boto3, imported only when an ``s3://`` URI is used (local paths need neither boto3
nor botocore, so the training path runs without them). The endpoint comes from
``KHMER_OCR_S3_ENDPOINT_URL``, else ``AWS_ENDPOINT_URL``, else AWS itself; credentials come from the usual
AWS environment variables.
Local writes are atomic (temporary file in the destination directory, then ``os.replace``); S3 uploads
carry a SHA-256 checksum. Failures are raised as :class:`StorageError` with the URI in the message.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from khmer_ocr.errors import KhmerOcrError

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

S3_SCHEME = "s3://"
_NOT_FOUND = {"404", "NoSuchKey", "NoSuchBucket"}
_CHUNK = 1 << 20


class StorageError(KhmerOcrError):
    """A storage operation failed; the message names the URI."""

    retryable = True  # a store that did not answer, or an object not there yet


class ChecksumError(StorageError):
    """Downloaded data did not match its expected checksum."""


def is_s3(uri: str | Path) -> bool:
    """True for ``s3://`` URIs, False for local paths."""
    return str(uri).startswith(S3_SCHEME)


def join(uri: str | Path, *parts: str) -> str:
    """Join path parts onto a local path or an S3 URI: ``join("s3://b/p", "shards", "x.tar")``."""
    if not is_s3(uri):
        return str(Path(uri, *parts))
    return "/".join([str(uri).rstrip("/"), *(p.strip("/") for p in parts if p.strip("/"))])


def s3_client() -> BaseClient:
    """The boto3 S3 client for the current environment, cached per (endpoint, region)."""
    endpoint = os.environ.get("KHMER_OCR_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
    return _make_client(endpoint, os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")


@functools.cache
def _make_client(endpoint: str | None, region: str) -> BaseClient:
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 8, "mode": "standard"},
        signature_version="s3v4",
        s3={"addressing_style": "path"},
    )
    # A session of its own: the default session is not thread-safe to create clients from.
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def reset_s3_client() -> None:
    """Drop cached clients, e.g. after the endpoint or credentials in the environment changed."""
    _make_client.cache_clear()


def exists(uri: str | Path) -> bool:
    """True if a file (local) or an object (S3) exists at ``uri``."""
    if not is_s3(uri):
        return Path(uri).is_file()
    from botocore.exceptions import ClientError

    bucket, key = _split(uri)
    try:
        s3_client().head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if _code(e) in _NOT_FOUND:
            return False
        raise _storage_error(uri, e) from e
    return True


def read_bytes(uri: str | Path, byte_range: tuple[int, int] | None = None) -> bytes:
    """Read a whole file, or ``size`` bytes from ``offset`` with ``byte_range=(offset, size)``.

    As with a local file, a range running past the end returns what there is (possibly ``b""``).
    """
    if byte_range is not None:
        offset, size = byte_range
        if offset < 0 or size < 0:
            raise ValueError(f"byte_range must be non-negative, got {byte_range}")
        if size == 0:
            return b""
    with _errors(uri):
        if not is_s3(uri):
            with open(uri, "rb") as f:
                if byte_range is None:
                    return f.read()
                f.seek(offset)
                return f.read(size)
        from botocore.exceptions import ClientError

        bucket, key = _split(uri)
        extra = {} if byte_range is None else {"Range": f"bytes={offset}-{offset + size - 1}"}
        try:
            return s3_client().get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
        except ClientError as e:
            if _code(e) == "InvalidRange":
                return b""
            raise


def read_text(uri: str | Path) -> str:
    """Read a UTF-8 text file."""
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str | Path, data: bytes) -> None:
    """Write ``data``: atomically for local paths (parents created), with a SHA-256 checksum on S3."""
    if not is_s3(uri):
        with _atomic_path(Path(uri)) as tmp:
            tmp.write_bytes(data)
        return
    bucket, key = _split(uri)
    with _errors(uri):
        s3_client().put_object(Bucket=bucket, Key=key, Body=data, ChecksumAlgorithm="SHA256")


def write_text(uri: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8."""
    write_bytes(uri, text.encode("utf-8"))


def put_file(local_path: str | Path, uri: str | Path) -> None:
    """Copy a local file to ``uri`` (atomic local copy, or S3 upload with a SHA-256 checksum)."""
    src = Path(local_path)
    if not src.is_file():
        raise StorageError(f"{src}: not found")
    if not is_s3(uri):
        with _atomic_path(Path(uri)) as tmp:
            shutil.copyfile(src, tmp)
        return
    bucket, key = _split(uri)
    with _errors(uri):
        s3_client().upload_file(str(src), bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"})


def get_file(uri: str | Path, local_path: str | Path, sha256: str | None = None) -> Path:
    """Copy or download ``uri`` to ``local_path`` atomically and return the path.

    With ``sha256`` (``"<hex>"`` or ``"sha256:<hex>"``) the data is verified; a mismatch is retried
    once, then raised as :class:`ChecksumError` and nothing is written to ``local_path``.
    """
    dest = Path(local_path)
    expected = sha256.lower().removeprefix("sha256:") if sha256 else None
    try:
        _fetch(uri, dest, expected)
    except ChecksumError:
        _fetch(uri, dest, expected)  # once more: the first copy may have been corrupted in transit
    return dest


def list_files(prefix_uri: str | Path) -> list[str]:
    """Files under a local directory or S3 prefix, recursive, as sorted ``/``-separated relative names.

    A missing directory or empty prefix gives ``[]``; a missing bucket raises :class:`StorageError`.
    """
    if not is_s3(prefix_uri):
        root = Path(prefix_uri)
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    bucket, key = _split(prefix_uri)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    names = []
    with _errors(prefix_uri):
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            names += [o["Key"][len(prefix) :] for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    return sorted(names)


# --- internals ---------------------------------------------------------------------------------------


def _split(uri: str | Path) -> tuple[str, str]:
    bucket, _, key = str(uri)[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket in S3 URI")
    return bucket, key


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _storage_error(uri: str | Path, e: ClientError) -> StorageError:
    code = _code(e)
    if code in _NOT_FOUND:
        return StorageError(f"{uri}: not found ({code})")
    message = e.response.get("Error", {}).get("Message", "")
    if code == "403":  # HEAD responses have no body to explain themselves
        message = "access denied (wrong credentials or no permission)"
    return StorageError(f"{uri}: {code or 'error'}: {message or e}")


@contextmanager
def _errors(uri: str | Path) -> Iterator[None]:
    """Translate missing files and S3 client errors into StorageError naming ``uri``."""
    try:
        yield
    except FileNotFoundError as e:
        raise StorageError(f"{uri}: not found") from e
    except Exception as e:
        if not is_s3(uri):  # boto errors come from S3 URIs only (and boto3 may not be installed)
            raise
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import ClientError, FlexibleChecksumError

        if isinstance(e, ClientError):
            raise _storage_error(uri, e) from e
        if isinstance(e, S3UploadFailedError):  # boto3 wraps the ClientError of a managed upload
            if isinstance(e.__context__, ClientError):
                raise _storage_error(uri, e.__context__) from e
            raise StorageError(f"{uri}: {e}") from e
        if isinstance(e, FlexibleChecksumError):
            raise ChecksumError(f"checksum mismatch for {uri}: {e}") from e
        raise


@contextmanager
def _atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; it replaces ``dest`` on success and is removed on error."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(uri: str | Path, dest: Path, sha256: str | None) -> None:
    with _atomic_path(dest) as tmp, _errors(uri):
        if is_s3(uri):
            bucket, key = _split(uri)
            s3_client().download_file(bucket, key, str(tmp))
        else:
            shutil.copyfile(uri, tmp)
        if sha256 is not None and (actual := sha256_file(tmp)) != sha256:
            raise ChecksumError(f"checksum mismatch for {uri}: expected sha256:{sha256}, got sha256:{actual}")


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a local file, as hex (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
