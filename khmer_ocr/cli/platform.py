"""`khmer-ocr platform`: the local platform (MLflow, TorchServe, Airflow) that `make run` brings up."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> dict:
    """Register the platform subcommand; returns its handler by name."""
    p = sub.add_parser(
        "platform",
        help="the local platform: MLflow, TorchServe and Airflow on 127.0.0.1 (what `make run` runs)",
        description="ACTION run: start what is not running (MLflow with SQLite, TorchServe serving the "
        "champion or the reference model, Airflow standalone with LocalExecutor), trigger the end-to-end "
        "DAG khmer_ocr_demo (data -> validate -> train -> evaluate -> register -> approve -> promote -> "
        "deploy), wait for it, print the URLs and OCR a Khmer line through REST. up: only start the "
        "services. down: stop them (by PID). status: which ones answer. Logs and PID files: STATE/logs, "
        "STATE/pids.",
    )
    p.add_argument("action", choices=["run", "up", "down", "status"])
    p.add_argument("--state", default=".khmer-ocr", help="state folder (default: .khmer-ocr)")
    p.add_argument(
        "--checkout", default=".", help="the repository checkout whose dags/ and plugins/ Airflow runs"
    )
    return {"platform": _platform}


def _platform(args: argparse.Namespace) -> int:
    from khmer_ocr.platform import LocalPlatform

    platform = LocalPlatform(args.state, checkout=args.checkout)
    if args.action == "down":
        stopped = platform.down()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    if args.action == "status":
        for name, ok in platform.status().items():
            print(f"{name:<11} {'up' if ok else 'down'}")
        return 0
    print("starting MLflow, TorchServe and Airflow (first start: about a minute)", flush=True)
    platform.up()
    if args.action == "run":
        platform.run_demo(progress=lambda line: print(line, flush=True))
    _print_urls(platform)
    if args.action == "run":
        from khmer_ocr.torchserve.deploy import SMOKE_IMAGE, SMOKE_TEXT

        answer = platform.ocr(SMOKE_IMAGE.read_bytes())
        truth = SMOKE_TEXT.read_text(encoding="utf-8").strip()
        print(f"\nOCR over REST of {SMOKE_IMAGE.name} (truth: {truth}):")
        conf, version = answer["confidence"], answer["model_version"]
        print(f"  {answer['text']}  (confidence {conf:.2f}, model version {version})")
        print(
            f"  curl -s -H 'Content-Type: image/png' --data-binary @{SMOKE_IMAGE} "
            f"{platform.urls['torchserve']}/predictions/khmer-ocr"
        )
    print("\nstop everything with `make stop`")
    return 0


def _print_urls(platform) -> None:
    urls = platform.urls
    print("\nthe platform is up:")
    print(f"  Airflow     {urls['airflow']}  (user admin, password {platform.admin_password()})")
    print(f"  MLflow      {urls['mlflow']}  (model khmer-ocr: aliases candidate, champion, previous)")
    print(f"  REST OCR    {urls['torchserve']}/predictions/khmer-ocr  (POST an image)")
    print(f"  metrics     {urls['metrics']}")
