"""The khmer-ocr command line: help, generate + validate, and one clear error line for bad arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from khmer_ocr.cli import main

SMALL = ["--profile", "demo", "--num-samples", "300", "--set", "shard_size=100", "--workers", "2"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "khmer-ocr"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)


def test_help_explains_every_command() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    for word in ("generate", "validate", "fonts", "demo"):
        assert word in out.stdout
    gen = _cli("generate", "--help")
    assert gen.returncode == 0 and "--num-samples" in gen.stdout and "s3://" in gen.stdout


def test_the_parser_loads_without_torch() -> None:
    """Building the parser (every command, --help) imports no model code: the lm command's defaults come
    from BeamConfig without importing the recognizers."""
    code = "import sys; from khmer_ocr.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_generate_then_validate(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    assert main(["generate", *SMALL, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "300 lines" in printed and "PASSED" in printed and "samples.png" in printed
    assert (out / "validation.json").is_file() and (out / "validation.html").is_file()
    assert json.loads((out / "validation.json").read_text())["success"] is True
    assert main(["validate", str(out)]) == 0
    # the same command again resumes: nothing is rendered twice
    assert main(["generate", *SMALL, "--out", str(out), "--no-validate"]) == 0
    assert "(0 rendered" in capsys.readouterr().out


def test_validate_fails_with_exit_1_on_bad_data(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    assert main(["generate", *SMALL, "--out", str(out), "--no-validate"]) == 0
    manifest = out / "manifest.jsonl"
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    rows[3]["text"] = ""
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    capsys.readouterr()
    assert main(["validate", str(out)]) == 1
    assert "FAILED" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "fonts.unseen=[NoSuchFont]"], "unknown font 'NoSuchFont'"),
        (["--set", "fonts.dirs=[/no/such/fonts]"], "font path does not exist"),
        (
            ["--set", "text.sources={corpus: 1.0}", "--set", "text.corpus_files=[EMPTY]"],
            "no usable Khmer line",
        ),
        (["--set", "no_such_key=1"], "unknown key"),
        (["--set", "num_samples=many"], "expected int"),
    ],
)
def test_bad_arguments_give_one_clear_error_line(tmp_path: Path, args: list[str], message: str) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    args = [a.replace("EMPTY", str(empty)) for a in args]
    res = _cli("generate", "--profile", "demo", "--out", str(tmp_path / "ds"), *args)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("khmer-ocr: error:") and message in lines[0], res.stderr


def test_unwritable_output_and_missing_dataset(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _cli("generate", "--profile", "demo", "--out", str(blocker / "ds"))
    assert res.returncode == 2 and "cannot write to" in res.stderr and "Traceback" not in res.stderr
    res = _cli("validate", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "not a complete dataset" in res.stderr


def test_predict_exit_status_says_whether_anything_was_read(tmp_path: Path) -> None:
    """No images: a usage error (exit 2, one line, no traceback); every image unreadable: exit 1 with an
    error row for each; one readable among them: exit 0."""
    from khmer_ocr.torchserve.deploy import SMOKE_IMAGE

    res = _cli("predict")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines() == [
        "khmer-ocr predict: error: no images: give image files or --manifest"
    ]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a PNG")
    res = _cli("predict", str(broken), str(tmp_path / "missing.png"))
    assert res.returncode == 1, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(broken), str(tmp_path / "missing.png")]
    assert all(r["error"] and "text" not in r for r in rows), rows
    res = _cli("predict", str(broken), str(SMOKE_IMAGE))
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert "error" in rows[0] and rows[1]["text"] and 0 < rows[1]["confidence"] <= 1


def test_train_with_a_tracking_server_that_is_down_fails_at_once(tmp_path: Path) -> None:
    """MLflow's client retries an unreachable server for minutes without a word: the CLI checks first."""
    import time

    from khmer_ocr.processes import free_port

    down = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    for command in (["train", "production_fast"], ["tune"]):
        res = _cli(
            *command, "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--tracking-uri", down
        )
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert lines[0].startswith(f"khmer-ocr: error: cannot reach the MLflow tracking server at {down}")
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run").exists()


def test_help_shows_every_default() -> None:
    for command, shown in (
        ("serve", ["(default: 8080)", "(default: 8081)", "(default: 8082)", "(default: 7070 7071)"]),
        ("tune", ["(default: demo)", "(default: all seven)"]),
        ("evaluate", ["(default: test test_unseen_font)", "(default: milestones)", "evaluation.json)"]),
        ("deploy", ["(default: models:/khmer-ocr@champion)", "http://127.0.0.1:8081)"]),
    ):
        res = _cli(command, "--help")
        text = " ".join(res.stdout.split())  # argparse wraps lines
        assert res.returncode == 0 and all(s in text for s in shown), (command, res.stdout)


def test_an_unknown_config_names_the_configs() -> None:
    res = _cli("train", "no_such_config", "--data", "x", "--out", "y")
    assert res.returncode == 2
    assert (
        "unknown training config 'no_such_config'; choose one of phase3_1/aggressive_learning," in res.stderr
    )
    assert "production_fast" in res.stderr and "base," not in res.stderr and "profile" not in res.stderr


def test_tied_configurations_are_said_to_tie() -> None:
    from khmer_ocr.training.phases import PhaseRun, comparison_table
    from khmer_ocr.training.trainer import TrainResult

    def run(name: str, acc: float) -> PhaseRun:
        return PhaseRun(name, TrainResult(Path(name), acc, 1, 1, False), acc, 0.0)

    tied = comparison_table([run("conservative_small", 0.0), run("ctc_alignment_free", 0.0)])
    assert "All 2 configurations tie at 0.00% validation character accuracy" in tied
    assert "the best is the first one in order (conservative_small)" in tied
    ranked = comparison_table([run("conservative_small", 0.1), run("ctc_alignment_free", 0.3)])
    assert "tie" not in ranked and ranked.index("ctc_alignment_free") < ranked.index("conservative_small")


def test_a_transfer_says_what_it_transferred() -> None:
    import dataclasses

    from khmer_ocr.inference import load_model
    from khmer_ocr.model_folder import REFERENCE_MODEL
    from khmer_ocr.models import build_model
    from khmer_ocr.training.transfer import transfer_weights

    model, cfg, _ = load_model(REFERENCE_MODEL)
    n = len(model.state_dict())
    text = transfer_weights(model, str(REFERENCE_MODEL))
    assert f"transferred {n} of {n} tensors: backbone." in text, text
    assert text.endswith("trained from scratch (new in this model or shaped differently): nothing"), text
    other = build_model(dataclasses.replace(cfg, size="tiny"))
    text = transfer_weights(other, str(REFERENCE_MODEL))
    assert f" of {len(other.state_dict())} tensors: " in text, text
    assert not text.endswith("shaped differently): nothing"), text


def test_register_says_what_happened_once(tmp_path: Path, mlflow_server: str) -> None:
    """A first registration says the model was created (not "already exists"); MLflow's run link once."""
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.writer import generate_dataset
    from khmer_ocr.model_folder import REFERENCE_MODEL

    cfg = DataConfig(name="r", num_samples=60, shard_size=60, seed=3, difficulty={1: 1.0})
    generate_dataset(cfg, tmp_path / "ds", workers=1, progress=False)
    gates = tmp_path / "open.yaml"
    gates.write_text("gates:\n  - {name: any, metric: char_accuracy, op: '>=', threshold: 0.0}\n")
    name = f"khmer-ocr-cli-{tmp_path.name[-12:]}-{os.getpid()}"  # a registered model that does not exist
    args = [
        "--data",
        str(tmp_path / "ds"),
        "--gates",
        str(gates),
        "--tracking-uri",
        mlflow_server,
        "--name",
        name,
    ]
    first = _cli("register", "--model", str(REFERENCE_MODEL), *args)
    second = _cli("register", "--model", str(REFERENCE_MODEL), *args)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    out = first.stdout + first.stderr
    assert "already exists" not in out and f"Successfully registered model '{name}'" in out, out
    assert out.count("View run imported-model at") == 1, out
    assert "already exists. Creating a new version" in second.stdout + second.stderr
