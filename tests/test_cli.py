"""The khmer-ocr command line: help, generate + validate, and one clear error line for bad arguments."""

from __future__ import annotations

import json
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
