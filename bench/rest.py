"""Benchmark: the REST endpoint (a real TorchServe with serving/handler.py) against in-process prediction.

Prints a markdown table: ms per line at batch 1 in process (one thread, preprocessing included) and over
REST sequentially (p50 / p95 / p99, one client), and lines/s with 8 concurrent clients, with and without
server-side batching. TorchServe runs two workers of one thread each (this machine has two cores).

Run: `.venv/bin/python bench/rest.py [--model MODEL] [--requests N]` (about a minute).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.reader import Dataset
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.inference import Recognizer
from khmer_ocr.processes import free_port
from khmer_ocr.torchserve.archive import build_archive
from khmer_ocr.torchserve.server import Ports, TorchServeProcess

SETTINGS = {  # name -> (batch size, max batch delay ms)
    "no batching": (1, 0),
    "batching (8, 2 ms)": (8, 2),
    "batching (8, 5 ms)": (8, 5),
}


class KeepAliveClient:
    """One persistent HTTP connection per thread: the load generator shares the two cores with the server,
    so it must be cheap (urllib opens a new connection per request)."""

    def __init__(self, url: str) -> None:
        self.host, self.port = url.removeprefix("http://").split(":")
        self.local = threading.local()

    def post(self, path: str, data: bytes, content_type: str) -> int:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=60)
        conn.request("POST", path, body=data, headers={"Content-Type": content_type})
        response = conn.getresponse()
        response.read()
        return response.status


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def test_lines(root: Path, n: int) -> list[bytes]:
    cfg = DataConfig(name="bench", num_samples=max(n * 8, 400), shard_size=400, seed=21)
    generate_dataset(cfg, root / "ds", workers=1, progress=False)
    ds = Dataset(str(root / "ds"))
    records = (ds.split("test") + ds.split("test_unseen_font") + ds.split("val"))[:n]
    return [ds.image_bytes(r) for r in records]


def in_process_ms(model: str | None, images: list[bytes]) -> list[float]:
    import io

    from PIL import Image

    torch.set_num_threads(1)
    recognizer = Recognizer.load(model)
    decoded = [Image.open(io.BytesIO(b)) for b in images]
    for im in decoded[:5]:
        recognizer.predict([im])
    times = []
    for im in decoded:
        t = time.perf_counter()
        recognizer.predict([im])
        times.append((time.perf_counter() - t) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model folder (default: the reference model)")
    parser.add_argument("--requests", type=int, default=400, help="requests per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        images = test_lines(Path(tmp), 200)
        local = in_process_ms(args.model, images)
        server = TorchServeProcess(Path(tmp) / "ts", Ports(*(free_port() for _ in range(5))))
        archive = build_archive(args.model, server.model_store)
        server.start()
        rows = []
        try:
            client = server.client
            http_client = KeepAliveClient(client.inference_url)
            for i, (label, (batch, delay)) in enumerate(SETTINGS.items()):
                name = f"m{i}"
                client.register(
                    archive.name, name, initial_workers=2, batch_size=batch, max_batch_delay_ms=delay
                )
                path = f"/predictions/{name}"
                for im in images[:20]:
                    http_client.post(path, im, "image/png")
                seq = []
                for k in range(args.requests):
                    t = time.perf_counter()
                    status = http_client.post(path, images[k % len(images)], "image/png")
                    seq.append((time.perf_counter() - t) * 1000)
                    assert status == 200, status
                t = time.perf_counter()
                jobs = [images[k % len(images)] for k in range(args.requests * 2)]
                with ThreadPoolExecutor(8) as pool:
                    answers = list(pool.map(lambda im, p=path: http_client.post(p, im, "image/png"), jobs))
                rate = len(answers) / (time.perf_counter() - t)
                assert all(a == 200 for a in answers)
                rows.append((label, seq, rate))
                client.unregister(name)
        finally:
            server.stop()
    p50_local = statistics.median(local)
    print(f"\nREST vs in process ({os.cpu_count()} CPU cores, {len(images)} generated test lines)\n")
    print("| path | p50 ms | p95 ms | p99 ms | p50 / in-process | lines/s, 8 clients |")
    print("|---|---|---|---|---|---|")
    print(
        f"| in process, batch 1, 1 thread | {p50_local:.2f} | {percentile(local, 95):.2f} "
        f"| {percentile(local, 99):.2f} | 1.00 | - |"
    )
    for label, seq, rate in rows:
        p50 = statistics.median(seq)
        print(
            f"| REST, {label} | {p50:.2f} | {percentile(seq, 95):.2f} | {percentile(seq, 99):.2f} "
            f"| {p50 / p50_local:.2f} (+{p50 - p50_local:.2f} ms) | {rate:.0f} |"
        )


if __name__ == "__main__":
    main()
