"""TorchServe for real: the handler over REST (raw, multipart, JSON), bad requests interleaved with good ones,
`khmer-ocr serve` stopping cleanly, deployments (switch, failed registration, failed smoke test), and the
register -> approve -> promote -> deploy -> rollback path against a real MLflow server."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shutil
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
from khmer_ocr.data.reader import Dataset
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.errors import DeployError
from khmer_ocr.inference import load_model, save_model
from khmer_ocr.model_folder import REFERENCE_MODEL
from khmer_ocr.processes import free_port
from khmer_ocr.torchserve.archive import build_archive
from khmer_ocr.torchserve.client import TorchServeClient
from khmer_ocr.torchserve.deploy import SMOKE_IMAGE, deploy
from khmer_ocr.torchserve.requests import (
    MAX_PIXELS,
    MAX_REQUEST_PIXELS,
    BadRequest,
    parse_request,
    read_request,
)
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


def _flat_png(width: int, height: int, value: int = 255) -> bytes:
    """A real, fully decodable one-colour grayscale PNG (a few kB even at 16 Mpixel)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), value).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


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
        ({"body": b'{"image": "\xff"}'}, "application/json", 400, "not valid JSON: not UTF-8"),
        ({"body": b'{"image": '}, "application/json", 400, "not valid JSON"),
        (
            {
                "body": json.dumps(
                    {"images": [base64.b64encode(_flat_png(16_000, 1_000)).decode()] * 3}
                ).encode()
            },
            "application/json",
            413,
            f"the limit is {MAX_REQUEST_PIXELS} decoded pixels per request",
        ),
    ]
    for parts, ctype, status, message in cases:
        with pytest.raises(BadRequest, match=message) as info:
            parse_request(parts, {k: ctype for k in parts}, ctype)
        assert info.value.status == status, message
    # The pixel budget is known from the headers alone: nothing is decoded to refuse a request.
    two = json.dumps({"images": [base64.b64encode(_flat_png(16_000, 1_000)).decode()] * 2}).encode()
    pending = read_request({"body": two}, {"body": "application/json"}, "application/json")
    assert pending.pixels == 32_000_000 and all(im._im is None for im in pending.images)  # not decoded
    with pytest.raises(BadRequest, match="the limit is 31999999 decoded pixels per request"):
        read_request({"body": two}, {"body": "application/json"}, "application/json", max_pixels=31_999_999)


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


def _worker_pids(client: TorchServeClient, name: str = NAME) -> list[int]:
    return sorted(w["pid"] for v in client.versions(name) for w in v.get("workers", []))


def test_pixel_amplification_is_refused_and_the_worker_lives(server, lines) -> None:
    """The issue's pattern: 12 concurrent JSON requests, each of 64 small, highly compressible 16000x1000
    PNGs (1.5 MB of JSON, a gigapixel to decode): refused from the headers, the same worker keeps serving."""
    client = server.client
    good = lines[0][0].read_bytes()
    want = client.predict(NAME, good, "image/png").body["text"]
    pids = _worker_pids(client)
    body = json.dumps({"images": [base64.b64encode(_flat_png(16_000, 1_000)).decode()] * 64}).encode()
    assert 1_400_000 < len(body) < 1_700_000
    start = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: client.predict(NAME, body, "application/json"), range(12)))
    assert [r.status for r in answers] == [413] * 12, [(r.status, r.body) for r in answers]
    assert all(
        f"the limit is {MAX_REQUEST_PIXELS} decoded pixels per request" in r.body["error"] for r in answers
    )
    assert time.monotonic() - start < 20  # refused from the headers, nothing decoded
    assert _worker_pids(client) == pids  # no worker was killed or restarted
    ok = client.predict(NAME, good, "image/png")
    assert ok.status == 200 and ok.body["text"] == want


def test_batch_pixel_budget(server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests that each fit their own budget but not together in one server-side batch: those that do not
    fit get 429 (retry), the others are read, the worker stays."""
    from khmer_ocr.torchserve.archive import serving_dir

    serving = Path(shutil.copytree(serving_dir(), tmp_path / "serving"))
    config = (serving / "model-config.yaml").read_text(encoding="utf-8")
    config = config.replace("max_request_pixels: 32000000", "max_request_pixels: 40000")
    config = config.replace("max_batch_pixels: 64000000", "max_batch_pixels: 100000")
    (serving / "model-config.yaml").write_text(config, encoding="utf-8")
    monkeypatch.setenv("KHMER_OCR_SERVING_DIR", str(serving))
    archive = build_archive(None, server.model_store, model_name="tight")
    client = server.client
    client.register(archive.name, "tight", batch_size=8, max_batch_delay_ms=1500)
    try:
        pids = _worker_pids(client, "tight")
        line = _flat_png(800, 48)  # 38,400 pixels: two fit in a batch of 100,000, a third does not
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.predict("tight", line, "image/png"), range(8)))
        statuses = sorted(r.status for r in answers)
        assert set(statuses) <= {200, 429} and 2 <= statuses.count(200) < 8, statuses
        busy = next(r for r in answers if r.status == 429)
        assert "the budget is 100000 decoded pixels per batch: retry" in busy.body["error"]
        body, ctype = _multipart([line, line])  # 76,800 pixels in one request: over its own budget
        r = client.predict("tight", body, ctype)
        assert r.status == 413 and "the limit is 40000 decoded pixels per request" in r.body["error"]
        assert _worker_pids(client, "tight") == pids
    finally:
        client.unregister("tight")


def test_malformed_bodies_log_one_line_each(server) -> None:
    """Malformed JSON and non-UTF-8 bodies: a 4xx answer and one log line each, no traceback."""
    client = server.client
    log = server.state / "logs" / "model_log.log"
    before = log.stat().st_size if log.exists() else 0
    cases = [
        (b'{"image": "\xff\xfe"}', "application/json", 400),
        (b"{broken json", "application/json", 400),
        ("ថ្ងៃ".encode("utf-16"), "text/plain", 415),
    ]
    for data, ctype, status in cases:
        assert client.predict(NAME, data, ctype).status == status
    deadline, new = time.monotonic() + 15, ""
    while time.monotonic() < deadline:
        with open(log, "rb") as f:
            f.seek(before)
            new = f.read().decode("utf-8", errors="replace")
        if new.count("refused (4") >= len(cases):
            break
        time.sleep(0.3)
    assert "Traceback" not in new, new
    assert new.count("refused (4") == len(cases), new


def test_answers_are_utf8_json_and_blank_images_read_empty(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.ports.inference, timeout=60)
    try:
        conn.request("POST", f"/predictions/{NAME}", SMOKE_IMAGE.read_bytes(), {"Content-Type": "image/png"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert response.getheader("Content-Type", "").replace(" ", "").lower() == "application/json;charset=utf-8"
    text = json.loads(raw.decode("utf-8"))["text"]
    assert text and text.encode("utf-8") in raw and b"\\u" not in raw  # readable Khmer, not \u17xx escapes
    client = server.client
    for image in (_flat_png(16_000, 40), _flat_png(400, 48, 0), _flat_png(300, 48, 128)):
        r = client.predict(NAME, image, "image/png")
        assert r.status == 200 and r.body["text"] == "" and r.body["confidence"] < 0.1, r.body


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
        re.sub(r"(?m)^(\s*size:).*$", r"\1 tiny", (broken / "model.yaml").read_text(encoding="utf-8")),
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


def test_request_limits_each_refused_with_its_reason() -> None:
    """Every documented limit, from the request parser: bytes per image, sides, images per request (JSON
    and multipart), data URLs accepted, and parts that are not image bytes refused."""
    from khmer_ocr.torchserve.requests import MAX_BYTES, MAX_IMAGES, MAX_SIDE

    png = SMOKE_IMAGE.read_bytes()
    b64 = base64.b64encode(png).decode()

    def refused(parts: dict, ctype: str, status: int, message: str) -> None:
        with pytest.raises(BadRequest, match=message) as info:
            read_request(parts, {k: ctype for k in parts}, ctype)
        assert info.value.status == status, message

    refused({"body": png + b"\0" * MAX_BYTES}, "image/png", 413, f"bytes; the limit is {MAX_BYTES}")
    refused(
        {"body": _png_header_only(MAX_SIDE + 1, 8)}, "image/png", 400, f"each side must be 4 to {MAX_SIDE}"
    )
    assert read_request({"body": _png_header_only(MAX_SIDE, 8)}, {}, "image/png").pixels == MAX_SIDE * 8
    too_many = json.dumps({"images": [b64] * (MAX_IMAGES + 1)}).encode()
    refused({"body": too_many}, "application/json", 413, f"{MAX_IMAGES + 1} images in one request; the limit")
    parts = {f"image{i}": png for i in range(MAX_IMAGES + 1)}
    refused(
        parts,
        "multipart/form-data",
        413,
        f"{MAX_IMAGES + 1} images in one request; the limit is {MAX_IMAGES}",
    )
    assert len(read_request(dict(list(parts.items())[:MAX_IMAGES]), {}, "multipart/form-data").images) == 64
    # a data URL is an image too
    url = json.dumps({"image": f"data:image/png;base64,{b64}"}).encode()
    parsed = parse_request({"body": url}, {"body": "application/json"}, "application/json")
    assert (
        parsed.single
        and parsed.images[0].shape == parse_request({"body": png}, {}, "image/png").images[0].shape
    )
    refused({"image0": 42}, "multipart/form-data", 400, "part 'image0' is not image bytes")
    refused({"image0": "a string"}, "multipart/form-data", 400, "part 'image0' is text .*, not an image file")
    refused({"body": {"image": 7}}, "application/json", 400, '"image" must be a non-empty base64 string')


def _handler_context(model_dir: Path, requests: int):
    """TorchServe's own Context (metrics from its default metrics.yaml), as a worker gives the handler."""
    import ts
    from ts.context import Context, RequestProcessor
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    metrics = MetricsCacheYamlImpl(str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    manifest = {"model": {"modelName": NAME, "modelVersion": "7"}}
    ctx = Context(NAME, str(model_dir), manifest, requests, None, "0.12.0", metrics=metrics)
    ctx.request_processor = [RequestProcessor({"Content-Type": "image/png"}) for _ in range(requests)]
    return ctx


def test_handler_answers_500_when_recognition_fails_and_keeps_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handler in process with TorchServe's Context: a recognizer that breaks (a bug, not the client's
    fault) answers 500 JSON for the requests it was reading, a bad request of the same batch keeps its own
    4xx, and the same handler reads again once recognition works."""
    from khmer_ocr.torchserve.archive import serving_dir

    monkeypatch.syspath_prepend(str(serving_dir()))
    from handler import KhmerOcrHandler

    ctx = _handler_context(REFERENCE_MODEL, 2)
    handler = KhmerOcrHandler()
    handler.initialize(ctx)
    png = SMOKE_IMAGE.read_bytes()
    good, bad = (json.loads(r) for r in handler.handle([{"body": png}, {"body": b""}], ctx))
    assert good["text"] and good["model_version"] == "7" and bad["status"] == 400
    model = handler.recognizer.model
    handler.recognizer.model = None  # a broken model: calling it raises inside Recognizer.predict
    broken, bad = (json.loads(r) for r in handler.handle([{"body": png}, {"body": b""}], ctx))
    assert broken["status"] == 500 and broken["error"].startswith("recognition failed: "), broken
    assert ctx.get_response_status(0)[0] == 500 and ctx.get_response_status(1)[0] == 400
    assert bad["status"] == 400 and "empty request" in bad["error"]
    handler.recognizer.model = model
    again = json.loads(handler.handle([{"body": png}], _handler_context(REFERENCE_MODEL, 1))[0])
    assert again["text"] == good["text"]


def test_a_curl_body_without_content_type_is_what_the_readme_says(server) -> None:
    """`curl --data-binary @line.png` without -H sends application/x-www-form-urlencoded: TorchServe's Java
    front end parses the PNG as a form and answers 500 (ErrorDataDecoderException) before the handler runs,
    which the README says (and why it always gives the type); the same bytes as octet-stream are read."""
    png = SMOKE_IMAGE.read_bytes()
    form = server.client.predict(NAME, png, "application/x-www-form-urlencoded")
    assert form.status == 500 and "ErrorDataDecoderException" in json.dumps(form.body), form.body
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "`curl --data-binary` without `-H` sends `application/x-www-form-urlencoded`" in readme
    assert "answers HTTP 500 (`ErrorDataDecoderException`)" in " ".join(readme.split())
    ok = server.client.predict(NAME, png, "application/octet-stream")
    assert ok.status == 200 and ok.body["text"]
    nginx = (Path(__file__).resolve().parents[1] / "infra/nginx/templates/default.conf.template").read_text()
    assert '"~*^application/x-www-form-urlencoded" "application/octet-stream";' in nginx
    assert "proxy_set_header Content-Type $khmer_ocr_content_type;" in nginx
