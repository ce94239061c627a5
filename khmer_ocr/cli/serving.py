"""`khmer-ocr` serving commands: export-mar, serve, deploy (TorchServe)."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from khmer_ocr.names import MODEL_NAME

MODEL_HELP = "model folder, models:/khmer-ocr@champion, runs:/<id>/model (default: the reference model)"


def add_commands(sub: argparse._SubParsersAction) -> dict:
    """Register the serving subcommands; returns their handlers by name."""
    p = sub.add_parser(
        "export-mar",
        help="build a TorchServe model archive (.mar)",
        description="Packs serving/handler.py, serving/model-config.yaml and the model folder (safetensors "
        "weights, model.yaml, charset.json) with torch-model-archiver into OUT/khmer-ocr-v<version>.mar.",
    )
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--out", required=True, help="folder for the archive (e.g. a TorchServe model store)")
    p.add_argument("--name", default=MODEL_NAME, help="model name in TorchServe")
    p = sub.add_parser(
        "serve",
        help="serve a model over REST with TorchServe, in the foreground",
        description="Builds the archive and runs TorchServe on 127.0.0.1 until Ctrl-C or SIGTERM, then stops "
        "it cleanly. POST an image to http://127.0.0.1:<inference-port>/predictions/khmer-ocr "
        "(raw bytes, multipart/form-data or JSON base64) to get its text and confidence.",
    )
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--inference-port", type=int, default=8080, help="REST inference (POST /predictions/...)")
    p.add_argument("--management-port", type=int, default=8081, help="management API (on 127.0.0.1 only)")
    p.add_argument("--metrics-port", type=int, default=8082, help="Prometheus metrics (/metrics)")
    p.add_argument(
        "--grpc-ports",
        type=int,
        nargs=2,
        default=[7070, 7071],
        metavar=("INFERENCE", "MANAGEMENT"),
        help="TorchServe's gRPC ports",
    )
    p.add_argument("--state", default=".khmer-ocr/torchserve", help="state folder: store, logs, PID file")
    p = sub.add_parser(
        "deploy",
        help="deploy a model to a running TorchServe (smoke-tested, old version kept on failure)",
        description="Registers the model as a new version next to the serving one, warms it, smoke-tests it "
        "with a known Khmer line (its REST answer must equal the same model's answer in process), makes it "
        "the default and unregisters the old version. If any step fails, the new version is removed and the "
        "old one keeps serving (exit 2).",
    )
    p.add_argument("--model", default="models:/khmer-ocr@champion", help=MODEL_HELP.replace(
        "the reference model", "models:/khmer-ocr@champion"))  # fmt: skip
    p.add_argument("--management-url", default="http://127.0.0.1:8081", help="TorchServe's management API")
    p.add_argument("--inference-url", default="http://127.0.0.1:8080", help="TorchServe's REST inference API")
    p.add_argument(
        "--model-store",
        default=os.environ.get("KHMER_OCR_MODEL_STORE", ".khmer-ocr/torchserve/model-store"),
        help="the model store folder the TorchServe instance reads (default $KHMER_OCR_MODEL_STORE, else "
        "the one of `khmer-ocr serve`)",
    )
    p.add_argument(
        "--key-file",
        default=os.environ.get("TORCHSERVE_KEY_FILE"),
        help="TorchServe's key_file.json when token authorization is on (default $TORCHSERVE_KEY_FILE; or "
        "give the keys as $TORCHSERVE_MANAGEMENT_TOKEN / $TORCHSERVE_INFERENCE_TOKEN)",
    )
    p.add_argument("--expect-text", help="also require the smoke test to read exactly this text")
    p.add_argument("--name", default=MODEL_NAME, help="model name in TorchServe")
    return {"export-mar": _export_mar, "serve": _serve, "deploy": _deploy}


def _export_mar(args: argparse.Namespace) -> int:
    from khmer_ocr.torchserve.archive import build_archive

    path = build_archive(args.model, args.out, model_name=args.name)
    print(f"archive: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    from khmer_ocr.torchserve.archive import build_archive
    from khmer_ocr.torchserve.server import Ports, TorchServeProcess

    ports = Ports(args.inference_port, args.management_port, args.metrics_port, *args.grpc_ports)
    server = TorchServeProcess(args.state, ports)
    archive = build_archive(args.model, server.model_store)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        server.start([f"{MODEL_NAME}={archive.name}"])
        print(
            f"serving {archive.name}: POST images to http://127.0.0.1:{ports.inference}/predictions/{MODEL_NAME}"
        )
        print(
            f"management http://127.0.0.1:{ports.management}, metrics http://127.0.0.1:{ports.metrics}/metrics"
        )
        print(f"logs in {Path(args.state) / 'logs'}; Ctrl-C stops", flush=True)
        code = server.wait()
        print(f"TorchServe exited ({code})")
        return 0 if code == 0 else 2
    except KeyboardInterrupt:
        print("stopping TorchServe", flush=True)
        return 0
    finally:
        server.stop()


def _deploy(args: argparse.Namespace) -> int:
    from khmer_ocr.torchserve.client import TorchServeClient
    from khmer_ocr.torchserve.deploy import deploy

    client = TorchServeClient(
        args.management_url,
        args.inference_url,
        token=os.environ.get("TORCHSERVE_MANAGEMENT_TOKEN"),
        inference_token=os.environ.get("TORCHSERVE_INFERENCE_TOKEN"),
        key_file=args.key_file,
    )
    result = deploy(args.model, client, args.model_store, model_name=args.name, smoke_expect=args.expect_text)
    print(
        f"deployed {args.model} as {result.model_name} version {result.version} "
        f"(was {result.previous or 'nothing'}); smoke test read {result.smoke['text']!r}"
    )
    return 0
