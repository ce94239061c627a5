"""TorchServe for real: the handler over REST (raw, multipart, JSON), bad requests interleaved with good ones,
`khmer-ocr serve` stopping cleanly, deployments (switch, failed registration, failed smoke test), and the
register -> approve -> promote -> deploy -> rollback path against a real MLflow server."""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from khmer_ocr import registry
from khmer_ocr.cli import main
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.dataset import Dataset, generate_dataset
from khmer_ocr.errors import DeployError
from khmer_ocr.inference import REFERENCE_MODEL, load_model, save_model
from khmer_ocr.processes import free_port
from khmer_ocr.torchserve.archive import build_archive
from khmer_ocr.torchserve.client import TorchServeClient
from khmer_ocr.torchserve.deploy import SMOKE_IMAGE, deploy
from khmer_ocr.torchserve.requests import MAX_PIXELS, BadRequest, parse_request
from khmer_ocr.torchserve.server import Ports, TorchServeProcess
from khmer_ocr.tracking import log_model_folder

NAME = "khmer-ocr"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's calling card), with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _ports() -> Ports:
    return Ports(*(free_port() for _ in range(5)))


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, str]]:
    """Real Khmer line images (test split of a small generated dataset) written as PNG files, with truth."""
    root = tmp_path_factory.mktemp("lines")
    cfg = DataConfig(name="s", num_samples=160, shard_size=80, seed=5, difficulty={1: 0.5, 2: 0.5})
    generate_dataset(cfg, root / "ds", workers=1, progress=False)
    ds = Dataset(str(root / "ds"))
    out = []
    for i, rec in enumerate((ds.split("test") + ds.split("test_unseen_font"))[:8]):
        path = root / f"line{i}.png"
        path.write_bytes(ds.image_bytes(rec))
        out.append((path, rec["text"]))
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A real TorchServe serving the committed reference model."""
    ts = TorchServeProcess(tmp_path_factory.mktemp("ts"), _ports())
    archive = build_archive(None, ts.model_store)
    ts.start([f"{NAME}={archive.name}"])
    try:
        yield ts
    finally:
        ts.stop()


def test_parse_request_rules() -> None:
    png = SMOKE_IMAGE.read_bytes()
    assert parse_request({"body": png}, {"body": "image/png"}, "image/png").single
    many = parse_request({"a": png, "b": png}, {"a": "image/png", "b": "image/png"}, "multipart/form-data")
    assert len(many.images) == 2 and not many.single
    cases = [
        ({"body": b""}, "application/octet-stream", 400, "empty request"),
        ({"body": b"GIF89a but not really"}, "application/octet-stream", 400, "not an image"),
        ({"body": png[: len(png) // 2]}, "image/png", 400, "not a readable image"),
        ({"body": _png_header_only(5_000, 5_000)}, "image/png", 413, f"the limit is {MAX_PIXELS}"),
        ({"body": _png_header_only(40_000, 40_000)}, "image/png", 413, "decompression bomb"),
        ({"body": _png_header_only(3, 200)}, "image/png", 400, "each side must be"),
        ({"body": png}, "text/plain", 415, "unsupported Content-Type"),
        ({"body": b"{oops"}, "application/json", 400, "not valid JSON"),
        ({"body": {"image": "@@@"}}, "application/json", 400, "not valid base64"),
        ({"body": {"images": []}}, "application/json", 400, "non-empty list"),
        ({"body": {"text": "hi"}}, "application/json", 400, '{"image"'),
        ({"note": "hello"}, "multipart/form-data", 400, "is text"),
    ]
    for parts, ctype, status, message in cases:
        with pytest.raises(BadRequest, match=message) as info:
            parse_request(parts, {k: ctype for k in parts}, ctype)
        assert info.value.status == status, message


def _multipart(files: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for i, data in enumerate(files):
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image{i}"; filename="l{i}.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_rest_answers_match_khmer_ocr_predict(server, lines, tmp_path: Path) -> None:
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", *(str(p) for p, _ in lines), "--output", str(out)]) == 0
    expected = [json.loads(ln) for ln in out.read_text(encoding="utf-8").splitlines()]
    client = server.client
    images = [p.read_bytes() for p, _ in lines]
    for data, want in zip(images, expected, strict=True):
        r = client.predict(NAME, data, "image/png")
        assert r.status == 200, r.body
        assert r.body["text"] == want["text"] and r.body["confidence"] == pytest.approx(
            want["confidence"], abs=1e-3
        )
        assert r.body["model"] == NAME and r.body["model_version"]
    body, ctype = _multipart(images[:3])
    r = client.predict(NAME, body, ctype)
    assert r.status == 200 and [p["text"] for p in r.body["predictions"]] == [w["text"] for w in expected[:3]]
    payload = json.dumps({"images": [base64.b64encode(d).decode() for d in images]}).encode()
    r = client.predict(NAME, payload, "application/json")
    assert r.status == 200 and [p["text"] for p in r.body["predictions"]] == [w["text"] for w in expected]
    single = json.dumps({"image": base64.b64encode(images[0]).decode()}).encode()
    assert client.predict(NAME, single, "application/json").body["text"] == expected[0]["text"]
    # The reference model reads most of these clean lines exactly.
    assert sum(w["text"] == t for w, (_, t) in zip(expected, lines, strict=True)) >= len(lines) // 2


def test_bad_requests_never_hurt_the_worker(server, lines) -> None:
    client = server.client
    good = lines[0][0].read_bytes()
    want = client.predict(NAME, good, "image/png").body["text"]
    pid = client.versions(NAME)[0]["workers"][0]["pid"]
    bad = [
        (b"", "application/octet-stream", 400),
        (b"definitely not an image", "application/octet-stream", 400),
        (good[:100], "image/png", 400),
        (_png_header_only(50_000, 50_000), "image/png", 413),
        (_png_header_only(2, 2), "image/png", 400),
        (good, "text/plain", 415),
        (b'{"image": "not base64!"}', "application/json", 400),
        (b"{broken json", "application/json", 400),
    ]
    for data, ctype, status in bad:  # one by one, each followed by a good request
        r = client.predict(NAME, data, ctype)
        assert r.status == status and isinstance(r.body, dict) and r.body["error"], (ctype, r.body)
        ok = client.predict(NAME, good, "image/png")
        assert ok.status == 200 and ok.body["text"] == want
    # All at once, so that bad and good requests share server-side batches.
    requests = [(good, "image/png", 200)] * 16 + bad * 2
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda req: client.predict(NAME, req[0], req[1]), requests))
    for (_, _, status), r in zip(requests, answers, strict=True):
        assert r.status == status, r.body
        if status == 200:
            assert r.body["text"] == want
    worker = client.versions(NAME)[0]["workers"][0]
    assert worker["pid"] == pid and worker["status"] == "READY"  # the same worker, still serving


def _variant(tmp: Path, name: str) -> Path:
    """The reference model stored as fp16: other weights (a new version), the same architecture."""
    model, cfg, charset = load_model(REFERENCE_MODEL)
    return save_model(model, cfg, charset, tmp / name, half=True)


def test_deploy_switches_and_failed_deploys_keep_the_old_version(server, lines, tmp_path: Path) -> None:
    client = server.client
    before = client.default_version(NAME)
    result = deploy(_variant(tmp_path, "fp16"), client, server.model_store)
    assert result.previous == before and client.default_version(NAME) == result.version != before
    assert [v["modelVersion"] for v in client.versions(NAME)] == [result.version]  # old one unregistered
    assert client.predict(NAME, lines[0][0].read_bytes(), "image/png").body["model_version"] == result.version

    broken = _variant(tmp_path, "broken")  # weights that do not fit the architecture: the worker cannot load
    (broken / "model.yaml").write_text(
        (broken / "model.yaml").read_text(encoding="utf-8").replace("size: base", "size: small"),
        encoding="utf-8",
    )
    with pytest.raises(DeployError, match="weights do not fit the architecture"):
        deploy(broken, client, server.model_store)
    with pytest.raises(DeployError, match=r"expected 'no such text'.*keeps serving"):
        deploy(REFERENCE_MODEL, client, server.model_store, smoke_expect="no such text")
    assert client.default_version(NAME) == result.version
    assert [v["modelVersion"] for v in client.versions(NAME)] == [result.version]
    assert client.predict(NAME, lines[0][0].read_bytes(), "image/png").status == 200
    deploy(REFERENCE_MODEL, client, server.model_store)  # back to the reference model for the other tests
    assert client.default_version(NAME) == before


def test_register_approve_promote_serve_rollback(server, lines, mlflow_env: str, tmp_path: Path) -> None:
    """The whole release path: two registry versions go live in turn, then a rollback restores the first."""
    name = "khmer-ocr-release-test"
    data = str(lines[0][0].parent / "ds")
    gates = tmp_path / "gates.yaml"
    gates.write_text(
        "gates:\n  - {name: reads, metric: char_accuracy, op: '>=', threshold: 0.5}\n", encoding="utf-8"
    )
    client = server.client
    image = lines[1][0].read_bytes()
    served = []
    for variant in (REFERENCE_MODEL, _variant(tmp_path, "fp16")):
        run_id = log_model_folder(variant, run_name="release-test")
        version = registry.register(run_id, data=data, gates=str(gates), name=name).version
        registry.approve(version, by="qa", name=name)
        registry.promote(version, by="qa", name=name)
        result = deploy(f"models:/{name}@champion", client, server.model_store, model_name="release")
        assert result.version == version  # TorchServe's version is the registry's
        assert client.predict("release", image, "image/png").body["model_version"] == version
        served.append(version)
    registry.rollback(by="oncall", reason="latency alarm", name=name)
    result = deploy(f"models:/{name}@champion", client, server.model_store, model_name="release")
    assert result.version == served[0] and result.previous == served[1]
    assert client.predict("release", image, "image/png").body["model_version"] == served[0]
    client.unregister("release")


def test_serve_cli_runs_in_the_foreground_and_stops_cleanly(tmp_path: Path) -> None:
    ports = _ports()
    cmd = [
        sys.executable, "-m", "khmer_ocr", "serve", "--state", str(tmp_path / "state"),
        "--inference-port", str(ports.inference), "--management-port", str(ports.management),
        "--metrics-port", str(ports.metrics),
        "--grpc-ports", str(ports.grpc_inference), str(ports.grpc_management),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    client = TorchServeClient(f"http://127.0.0.1:{ports.management}", f"http://127.0.0.1:{ports.inference}")
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # "serving ..." is printed once the model has a ready worker
            if line.startswith(b"serving "):
                break
        r = client.predict(NAME, SMOKE_IMAGE.read_bytes(), "image/png")
        assert r.status == 200 and r.body["text"]
        pid_file = tmp_path / "state" / "torchserve.pid"
        ts_pid = int(pid_file.read_text())
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"stopping TorchServe" in out and not pid_file.exists()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(ts_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("TorchServe's process group outlived `khmer-ocr serve`")
    assert not client.healthy()
