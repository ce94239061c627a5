"""khmer_ocr.storage against local paths and a real S3 server (SeaweedFS, see conftest.s3_server)."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from khmer_ocr import storage
from khmer_ocr.storage import StorageError

KHMER = "សួស្តី ពិភពលោក\n"  # "hello world"


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A storage root that does not hold anything yet: a local directory or a fresh S3 bucket."""
    if request.param == "s3":
        return request.getfixturevalue("s3_env")
    return str(tmp_path / "store")


def test_is_s3_and_join() -> None:
    assert storage.is_s3("s3://b/k")
    assert not storage.is_s3("/tmp/s3://x")
    assert not storage.is_s3(Path("data/x"))
    assert storage.join("s3://b/p", "shards", "x.tar") == "s3://b/p/shards/x.tar"
    assert storage.join("s3://b/p/", "/shards/", "x.tar") == "s3://b/p/shards/x.tar"
    assert storage.join("s3://b", "x.tar") == "s3://b/x.tar"
    assert storage.join(Path("/data"), "shards", "x.tar") == "/data/shards/x.tar"


def test_bytes_and_text_round_trip(root: str) -> None:
    uri = storage.join(root, "a", "b", "blob.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"\x00\x01binary")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"\x00\x01binary"
    storage.write_bytes(uri, b"")  # overwrite, and empty files are files
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b""

    text_uri = storage.join(root, "text.txt")
    storage.write_text(text_uri, KHMER)
    assert storage.read_text(text_uri) == KHMER
    assert storage.read_bytes(text_uri) == KHMER.encode("utf-8")


def test_ranged_reads(root: str) -> None:
    data = bytes(range(256)) * 4
    uri = storage.join(root, "shard.tar")
    storage.write_bytes(uri, data)
    assert storage.read_bytes(uri, (0, 16)) == data[:16]
    assert storage.read_bytes(uri, (300, 50)) == data[300:350]
    assert storage.read_bytes(uri, (10, 0)) == b""
    assert storage.read_bytes(uri, (1020, 10)) == data[1020:]  # runs past the end: what there is
    assert storage.read_bytes(uri, (5000, 10)) == b""
    with pytest.raises(ValueError, match=r"byte_range must be non-negative, got \(-1, 4\)"):
        storage.read_bytes(uri, (-1, 4))


@pytest.mark.parametrize("size", [1000, 9 * 1024 * 1024], ids=["small", "multipart"])
def test_put_and_get_file(root: str, tmp_path: Path, size: int) -> None:
    data = (KHMER.encode("utf-8") * (size // 40 + 1))[:size]
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    uri = storage.join(root, "models", "v1", "model.bin")

    storage.put_file(src, uri)
    assert storage.exists(uri)
    out = tmp_path / "out" / "deep" / "model.bin"
    assert storage.get_file(uri, out, sha256=digest) == out
    assert out.read_bytes() == data
    assert storage.get_file(uri, out, sha256=f"sha256:{digest.upper()}").read_bytes() == data
    assert storage.get_file(str(uri), str(tmp_path / "plain.bin")).read_bytes() == data  # no checksum
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.bin"]  # no temporary files left


def test_checksum_mismatch_is_retried_then_raises(
    root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = storage.join(root, "model.bin")
    storage.write_bytes(uri, b"real bytes")
    fetches = []
    fetch = storage._fetch
    monkeypatch.setattr(storage, "_fetch", lambda *args: fetches.append(args) or fetch(*args))

    out = tmp_path / "out" / "model.bin"
    wrong = "sha256:" + hashlib.sha256(b"other bytes").hexdigest()
    with pytest.raises(storage.ChecksumError, match=rf"checksum mismatch for {re.escape(uri)}"):
        storage.get_file(uri, out, sha256=wrong)
    assert len(fetches) == 2
    assert list(out.parent.iterdir()) == []  # the bad download was deleted

    out.write_bytes(b"previous")  # an existing file is left as it was
    with pytest.raises(StorageError, match=rf"checksum mismatch for {re.escape(uri)}"):
        storage.get_file(uri, out, sha256=wrong)
    assert out.read_bytes() == b"previous"


def test_list_files_is_recursive_relative_and_sorted(root: str) -> None:
    for name in ["z.txt", "sub/b.txt", "sub/a.txt", "sub/deep/c.txt", "subway/x.txt"]:
        storage.write_text(storage.join(root, name), name)
    assert storage.list_files(root) == sorted(
        ["z.txt", "sub/a.txt", "sub/b.txt", "sub/deep/c.txt", "subway/x.txt"]
    )
    assert storage.list_files(storage.join(root, "sub")) == ["a.txt", "b.txt", "deep/c.txt"]
    assert storage.list_files(storage.join(root, "sub") + "/") == ["a.txt", "b.txt", "deep/c.txt"]
    assert storage.list_files(storage.join(root, "missing")) == []


def test_not_found_is_storage_error_naming_the_uri(root: str, tmp_path: Path) -> None:
    uri = storage.join(root, "no", "such.bin")
    assert not storage.exists(uri)
    for call in (
        lambda: storage.read_bytes(uri),
        lambda: storage.read_bytes(uri, (0, 4)),
        lambda: storage.read_text(uri),
        lambda: storage.get_file(uri, tmp_path / "out.bin"),
    ):
        with pytest.raises(StorageError, match=rf"{re.escape(uri)}: not found"):
            call()
    assert not (tmp_path / "out.bin").exists()
    with pytest.raises(StorageError, match="not found"):
        storage.put_file(tmp_path / "missing.bin", uri)


def test_missing_bucket_is_storage_error(s3_env: str, tmp_path: Path) -> None:
    src = tmp_path / "x.bin"
    src.write_bytes(b"x")
    uri = "s3://no-such-bucket-khmer-ocr/k.bin"
    assert not storage.exists(uri)
    for call in (
        lambda: storage.read_bytes(uri),
        lambda: storage.write_bytes(uri, b"x"),  # the server must not create buckets on upload
        lambda: storage.put_file(src, uri),
        lambda: storage.list_files("s3://no-such-bucket-khmer-ocr/prefix"),
    ):
        with pytest.raises(StorageError, match=r"s3://no-such-bucket-khmer-ocr/\S*: not found"):
            call()


def test_s3_objects_carry_sha256_checksums(s3_env: str, tmp_path: Path) -> None:
    data = KHMER.encode("utf-8")
    src = tmp_path / "src.txt"
    src.write_bytes(data)
    storage.write_bytes(storage.join(s3_env, "a.txt"), data)
    storage.put_file(src, storage.join(s3_env, "b.txt"))
    expected = base64.b64encode(hashlib.sha256(data).digest()).decode()
    bucket = s3_env.removeprefix("s3://")
    for key in ("a.txt", "b.txt"):
        head = storage.s3_client().head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == expected


@pytest.mark.parametrize("credential", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"])
def test_wrong_credentials_are_rejected(
    s3_env: str, s3_server, monkeypatch: pytest.MonkeyPatch, credential: str
) -> None:
    uri = storage.join(s3_env, "secret.txt")
    storage.write_text(uri, "classified")
    monkeypatch.setenv(credential, "wrong" + "0" * 16)
    storage.reset_s3_client()
    for call in (
        lambda: storage.read_text(uri),
        lambda: storage.write_text(uri, "x"),
        lambda: storage.exists(uri),
    ):
        with pytest.raises(
            StorageError, match=rf"{re.escape(uri)}: (SignatureDoesNotMatch|InvalidAccessKeyId|403)"
        ):
            call()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    storage.reset_s3_client()
    assert storage.read_text(uri) == "classified"  # the rejected write changed nothing


def test_s3_client_is_cached_per_endpoint_and_resettable(
    s3_env: str, s3_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = storage.s3_client()
    assert storage.s3_client() is client
    assert client.meta.endpoint_url == s3_server.endpoint_url
    assert client.meta.config.retries["mode"] == "standard"
    storage.reset_s3_client()
    assert storage.s3_client() is not client

    monkeypatch.delenv("KHMER_OCR_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert storage.s3_client().meta.endpoint_url == "http://127.0.0.1:9"
