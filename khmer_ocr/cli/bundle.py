"""`khmer-ocr bundle`: a portable folder that trains the recognizer on an offline (GPU) machine."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> dict:
    """Register the bundle subcommand; returns its handler by name."""
    p = sub.add_parser(
        "bundle",
        help="write a portable training folder for an offline machine (at most 60 MiB)",
        description="Writes DIR: the package source, the training fonts and the held-out unseen-test font "
        "(never a reserved one), the derived text tables, wheels of the small packages the training path "
        "needs beyond torch, numpy, pillow, opencv-python-headless, pyyaml and safetensors (downloaded for "
        "--python-version), FriBiDi for Pillow's RAQM layout, and run.sh. On the target machine, with no "
        "network: bash DIR/run.sh --minutes M --out OUT [--config NAME] [--workers N] trains on lines "
        "rendered on the fly (CUDA with bf16 autocast where present, else the CPU), evaluates on a generated "
        "test set and writes OUT/model/ and OUT/report.json.",
    )
    p.add_argument("--out", required=True, help="the bundle folder to write (new or empty)")
    p.add_argument("--python-version", help="the target machine's Python, e.g. 3.12 (default: this Python's)")
    return {"bundle": _bundle}


def _bundle(args: argparse.Namespace) -> int:
    from khmer_ocr.training.bundle import build_bundle

    result = build_bundle(args.out, args.python_version)
    roles = [f["role"] for f in result.fonts]
    print(
        f"bundle {result.path}: {result.bytes / 2**20:.1f} MiB for Python {result.python_version}; "
        f"{roles.count('train')} training fonts + {roles.count('unseen')} unseen-test font, "
        f"wheels {', '.join(result.wheels)}, tables {', '.join(result.tables)}, libs {', '.join(result.libs)}"
    )
    print(f"on the target: bash {result.path}/run.sh --minutes 60 --out run1")
    return 0
