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
    p.add_argument(
        "--distributed",
        action="store_true",
        help="the production topology of docker-compose.yml as local processes (`make run-distributed`): "
        "PostgreSQL, Redis, S3 (SeaweedFS), MLflow on PostgreSQL and S3, Airflow on the CeleryExecutor with "
        "the workers and queues of infra/airflow/airflow.env, TorchServe",
    )
    p.add_argument(
        "--state", help="state folder (default: .khmer-ocr; with --distributed: .khmer-ocr-distributed)"
    )
    p.add_argument(
        "--checkout", default=".", help="the repository checkout whose dags/ and plugins/ Airflow runs"
    )
    return {"platform": _platform}


def _platform(args: argparse.Namespace) -> int:
    if args.distributed:
        from khmer_ocr.distributed.platform import DistributedPlatform

        platform = DistributedPlatform(args.state or ".khmer-ocr-distributed", checkout=args.checkout)
    else:
        from khmer_ocr.platform import LocalPlatform

        platform = LocalPlatform(args.state or ".khmer-ocr", checkout=args.checkout)
    if args.action == "down":
        stopped = platform.down()
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    if args.action == "status":
        for name, ok in platform.status().items():
            print(f"{name:<19} {'up' if ok else 'down'}")
        return 0
    what = (
        "PostgreSQL, Redis, S3, MLflow, TorchServe and Airflow"
        if args.distributed
        else ("MLflow, TorchServe and Airflow")
    )
    print(f"starting {what} (first start: about a minute)", flush=True)
    platform.up()
    if args.distributed:
        workers = ", ".join(
            f"{w.name} ({','.join(w.queues)}; {w.concurrency})" for w in platform.topology.workers
        )
        print(f"executor: {platform.topology.executor}; workers (queues; concurrency): {workers}", flush=True)
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
    if "s3" in urls:
        print(f"  S3          {urls['s3']}  (buckets khmer-ocr-data, khmer-ocr-mlflow; keys: secrets.json)")
