"""The docs run as written: every fenced `bash` and `python` block of README.md and docs/*.md, in order, in a
sandbox (a temporary folder with the repository's .venv, khmer_ocr/, infra/ and serving/ linked in, the line
images the examples name, and a local platform's MLflow and TorchServe on free ports), with small sizes.

What the test changes in a command, and nothing else:
  PORTS   the documented ports (MLflow 5000, TorchServe 8090/8091) become the sandbox's free ports;
  SIZES   a few options that would take minutes or hours (dataset size, training schedule, time budgets,
          the seven tuning configurations) become tiny ones. A rule that no longer matches any command is
          stale and fails the test, so the table cannot drift either.
Each logical command (backslash continuations joined) runs on its own with bash and must exit 0; exit 1 is
accepted only where the command's own comment documents it ("exit 1 ..."). An example answer written as a
comment right after a command (`# {"text": ...}`) must have the keys of the real answer (and the same Khmer
text where it shows one, as UTF-8, not \\u escapes). Python blocks run whole with the venv's Python.

A block is skipped only when the line before its fence is `<!-- docs-test: skip: REASON -->` (a whole file:
`<!-- docs-test: skip-file: REASON -->` on its first line). Skips must say why and where the same thing is
checked instead, there may be at most MAX_SKIPS of them, and skipped blocks are still syntax-checked
(`bash -n`, Python's parser). A fence with no language whose first word is a command fails: label it.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
COMMANDS = ("khmer-ocr", ".venv/bin/", "make ", "curl ", "python ", "docker ", "bash ", "torchrun ", "pip ")
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip:\s*(?P<reason>.+?)\s*-->\s*$")
SKIP_FILE = re.compile(r"^<!--\s*docs-test:\s*skip-file:\s*(?P<reason>.+?)\s*-->\s*$")
# Skips are for what cannot run on a test machine (a Docker engine, GPUs, the suite itself), nothing else.
MAX_SKIPS = 6
FENCE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)\s*$")

# Small sizes: (pattern on one logical command, text appended or substituted). Each must match somewhere.
TINY_TRAIN = (
    " --set model.size=tiny --set optim.batch_size=8 --set optim.epochs=1 --set max_steps_per_epoch=2"
    " --set data.max_val_lines=8"
)
TINY_STREAM = " --set model.size=tiny --set optim.batch_size=8 --set data.stream.eval_lines=40"
END = r"(\s+#.*)?$"  # the command's own comment stays last
SIZES: list[tuple[str, str, str]] = [  # (regex, replacement for re.sub, why)
    (
        r"^(khmer-ocr generate .*--profile demo\b.*?)" + END,
        r"\1 --num-samples 120 --set shard_size=60 --workers 1\2",
        "2,000 demo lines: 120",
    ),
    (
        r"^(khmer-ocr (?:train|tune) .*--profile demo\b.*?)" + END,
        r"\1" + TINY_TRAIN + r"\2",
        "the demo schedule of each configuration: two steps of a tiny model",
    ),
    (
        r"^(khmer-ocr tune (?:(?!--profile).)*?)" + END,
        r"\1 --only conservative_small ctc_alignment_free" + TINY_TRAIN + r"\2",
        "seven configurations: two, each two steps of a tiny model",
    ),
    (r"^(khmer-ocr evaluate .*?)" + END, r"\1 --max-lines 20\2", "every test line: 20 per split"),
    (r"--time-budget \d+", "--time-budget 0.05", "hours of streamed training: 3 seconds"),
    (r"--workers 1[0-9]\b", "--workers 1", "14 generator processes: 1"),
    (
        r"^(khmer-ocr train .*--stream\b.*?)" + END,
        r"\1" + TINY_STREAM + r"\2",
        "a 2,000-line evaluation set and the production model: 40 lines, a tiny model",
    ),
]


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None  # the reason, when skipped

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    whole = SKIP_FILE.match(lines[0]) if lines else None
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.match(before)
        reason = whole["reason"] if whole else (marker["reason"] if marker else None)
        found.append(Block(path, i + 1, m["lang"].lower(), "\n".join(lines[i + 1 : end]), reason))
        i = end + 1
    return found


def all_blocks() -> list[Block]:
    return [b for path in DOC_FILES for b in blocks(path)]


def commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(logical command, the comment lines right after it) for each command of a bash block."""
    joined: list[str] = []
    for raw in text.splitlines():
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + raw.strip()
        else:
            joined.append(raw.rstrip())
    pending: tuple[str, list[str]] | None = None
    for line in joined:
        if not line.strip():
            continue
        if line.lstrip().startswith("#"):
            if pending:
                pending[1].append(line.lstrip()[1:].strip())
            continue
        if pending:
            yield pending
        pending = (line.strip(), [])
    if pending:
        yield pending


# -------------------------------------------------------------------------------------------- fast checks
def test_skips_are_rare_and_justified_and_every_command_block_is_labelled() -> None:
    found = all_blocks()
    runnable = [b for b in found if b.lang in RUNNABLE]
    assert len(runnable) >= 8, [b.where for b in runnable]  # the parser still finds the docs' blocks
    markers = sum(
        len(SKIP.findall(line)) + len(SKIP_FILE.findall(line))
        for path in DOC_FILES
        for line in path.read_text(encoding="utf-8").splitlines()
    )
    assert markers <= MAX_SKIPS, f"{markers} docs-test skip markers: make the blocks runnable instead"
    for b in found:
        if b.skip is not None:
            assert len(b.skip) >= 40 and "test" in b.skip, f"{b.where}: say why, and where it is checked"
        first = b.text.strip().split("\n", 1)[0]
        if not b.lang and first.startswith(COMMANDS):
            pytest.fail(f"{b.where}: a command block without a language: label it ```bash so it is tested")
    for b in runnable:  # skipped or not, every block parses
        if RUNNABLE[b.lang] == "python":
            ast.parse(b.text, filename=b.where)
        else:
            done = subprocess.run(["bash", "-n"], input=b.text, text=True, capture_output=True)
            assert done.returncode == 0, f"{b.where}: {done.stderr}"


def test_the_dataset_format_page_lists_what_a_dataset_holds(tmp_path: Path) -> None:
    """docs/dataset-format.md: the files of a generated, validated dataset and the manifest's fields."""
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.reader import Dataset
    from khmer_ocr.data.validation import validate_dataset, write_report
    from khmer_ocr.data.writer import generate_dataset

    page = (ROOT / "docs" / "dataset-format.md").read_text(encoding="utf-8")
    tree = page.split("```", 2)[1]
    documented = {m for m in re.findall(r"^\s{2}(\S+)", tree, re.M)}
    fields = {f.strip() for row in re.findall(r"^\| ([a-z_, ]+) \|", page, re.M) for f in row.split(",")}
    fields.discard("field")

    out = tmp_path / "ds"
    generate_dataset(
        DataConfig(name="f", num_samples=40, shard_size=40, seed=1, difficulty={1: 1.0}), out, progress=False
    )
    write_report(validate_dataset(out, progress=False), out)
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    shards = {f for f in files if f.startswith("shards/")}
    assert {"shards/shard-00000.tar", "shards/shard-00000.jsonl"} == shards
    assert files - shards == {d for d in documented if not d.startswith("shards/") and d != "DATASET/"}
    keys = set().union(*(r.keys() for r in Dataset(out).records))
    assert keys == fields, f"undocumented: {keys - fields}; documented but absent: {fields - keys}"
    report = json.loads((out / "validation.json").read_text(encoding="utf-8"))
    assert set(report) == {"dataset", "version", "success", "checks", "stats"}
    assert set(report["checks"][0]) == {"name", "success", "expectation", "details"}


# --------------------------------------------------------------------------------------- the sandbox
@dataclass
class Sandbox:
    root: Path
    env: dict[str, str]
    ports: dict[str, str]  # documented port -> the sandbox's


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The folder the docs' commands run in: the repository's code linked in, line images, and a running
    local platform (MLflow with a registry that has a champion and versions 2 and 3, TorchServe serving
    the reference model) whose state folder is ./.khmer-ocr, as after `make run`."""
    from mlflow import MlflowClient

    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.writer import generate_dataset
    from khmer_ocr.model_folder import REFERENCE_MODEL
    from khmer_ocr.platform import LocalPlatform, PlatformPorts
    from khmer_ocr.processes import free_port
    from khmer_ocr.registry import approve, promote, register
    from khmer_ocr.torchserve.deploy import SMOKE_IMAGE
    from khmer_ocr.torchserve.server import Ports
    from khmer_ocr.tracking import log_model_folder

    root = tmp_path_factory.mktemp("docs") / "repo"
    root.mkdir()
    for name in (".venv", "khmer_ocr", "infra", "serving"):
        (root / name).symlink_to(ROOT / name)
    for name in ("line.png", "line1.png", "line2.png"):
        shutil.copy(SMOKE_IMAGE, root / name)
    saved = dict(os.environ)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["KHMER_OCR_CACHE"] = str(root.parent / "cache")
    platform = LocalPlatform(
        root / ".khmer-ocr", PlatformPorts(free_port(), free_port(), Ports(*(free_port() for _ in range(5))))
    )
    try:
        platform.start_mlflow()
        platform.start_torchserve()
        url = platform.urls["mlflow"]
        data = root.parent / "eval-data"
        cfg = DataConfig(name="d", num_samples=60, shard_size=60, seed=7, difficulty={1: 1.0})
        generate_dataset(cfg, data, workers=1, progress=False)
        gates = root.parent / "open-gates.yaml"
        gates.write_text("gates:\n  - {name: reads, metric: char_accuracy, op: '>=', threshold: 0.0}\n")
        run_id = log_model_folder(REFERENCE_MODEL, tracking_uri=url, run_name="reference")
        first = register(run_id, data=str(data), gates=str(gates), tracking_uri=url)
        approve(first.version, "docs", tracking_uri=url)
        promote(first.version, "docs", tracking_uri=url)
        for _ in range(2):  # versions 2 and 3, pending: the README approves and promotes 3
            register(run_id, tracking_uri=url)
        assert [v.version for v in MlflowClient(url).search_model_versions("name = 'khmer-ocr'")] != []
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "KHMER_OCR_STATE")},
            "PATH": f"{root / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            "OMP_NUM_THREADS": "1",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "PYTHONUNBUFFERED": "1",
        }
        p, ts = platform.ports, platform.ports.torchserve
        ports = {"127.0.0.1:5000": f"127.0.0.1:{p.mlflow}", "127.0.0.1:8090": f"127.0.0.1:{ts.inference}",
                 "127.0.0.1:8091": f"127.0.0.1:{ts.management}"}  # fmt: skip
        yield Sandbox(root, env, ports)
    finally:
        platform.down()
        os.environ.clear()
        os.environ.update(saved)


def _adapt(command: str, ports: dict[str, str], used: set[int]) -> str:
    for documented, ours in ports.items():
        command = command.replace(documented, ours)
    for k, (pattern, replacement, _) in enumerate(SIZES):
        changed = re.sub(pattern, replacement, command)
        if changed != command:
            used.add(k)
            command = changed
    return command


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value)) if value else set()
    return set()


def _check_example(block: Block, command: str, example: str, raw: str) -> None:
    """The real answer has the example's keys, and its text where the example shows Khmer."""
    try:
        answer = json.loads(raw)
    except ValueError:
        pytest.fail(f"{block.where}: `{command}` answered {raw[:300]!r}, not JSON like {example}")
    assert _keys(answer) == set(re.findall(r'"(\w+)":', example)), f"{block.where}: {raw[:300]} vs {example}"
    for khmer in re.findall(r'"text": "([^"]+)"', example):
        assert answer.get("text") == khmer, (
            f"{block.where}: read {answer.get('text')!r}, the README says {khmer!r}"
        )
        assert khmer.encode("utf-8") in raw.encode("utf-8") and "\\u" not in raw, (
            f"{block.where}: {raw[:200]}"
        )


@pytest.mark.slow
def test_readme_and_docs_run_as_written(sandbox: Sandbox) -> None:
    used: set[int] = set()
    ran = 0
    for block in all_blocks():
        if block.skip is not None or block.lang not in RUNNABLE:
            continue
        if RUNNABLE[block.lang] == "python":
            script = sandbox.root / f"block-{block.line}.py"
            script.write_text(_adapt(block.text, sandbox.ports, used), encoding="utf-8")
            python = str(sandbox.root / ".venv" / "bin" / "python")
            done = subprocess.run(
                [python, str(script)], cwd=sandbox.root, env=sandbox.env, capture_output=True, text=True,
                timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, (
                f"{block.where}: python exited {done.returncode}\n{done.stderr[-3000:]}"
            )
            ran += 1
            continue
        for command, comments in commands(block.text):
            adapted = _adapt(command, sandbox.ports, used)
            done = subprocess.run(
                ["bash", "-o", "pipefail", "-c", adapted], cwd=sandbox.root, env=sandbox.env,
                capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            allowed = {0, 1} if re.search(r"#.*\bexit 1\b", command) else {0}
            output = f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            assert done.returncode in allowed, (
                f"{block.where}: `{adapted}` exited {done.returncode}\n{output}"
            )
            examples = [c for c in comments if c.startswith("{")]
            if examples:
                _check_example(block, command, examples[0], done.stdout.strip())
            ran += 1
    assert ran >= 20, f"only {ran} commands ran"
    stale = [SIZES[k][2] for k in range(len(SIZES)) if k not in used]
    assert not stale, f"size rules that match no documented command any more: {stale}"
    # what the README's walk-through leaves behind, where it says
    assert (sandbox.root / "runs" / "p31" / "best" / "model" / "model.safetensors").is_file()
    assert list((sandbox.root / "model-store").glob("*.mar")) and not (sandbox.root / "mlflow.db").exists()


def test_production_md_says_what_multi_gpu_training_really_is() -> None:
    """docs/production.md: DAG training runs in the task's process (one GPU); torchrun only in the trainer
    service or by hand. Nothing the DAGs run reads the torchrun variables."""
    page = (ROOT / "docs" / "production.md").read_text(encoding="utf-8")
    assert "one GPU per training" in page and "The\nDAGs do not start torchrun" in page
    readers = [
        str(p.relative_to(ROOT))
        for folder in ("dags", "plugins", "khmer_ocr")
        for p in (ROOT / folder).rglob("*.py")
        if "NPROC_PER_NODE" in (text := p.read_text(encoding="utf-8"))
        or (folder != "khmer_ocr" and "torchrun" in text)  # the library only knows it runs under torchrun
    ]
    assert readers == [], readers
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    assert '"--nproc_per_node=${TRAINING_NPROC_PER_NODE:-1}"' in compose  # the trainer service's torchrun


def test_what_the_readme_writes_into_the_repository_is_ignored_by_git() -> None:
    """README commands run from the repository root write these: git ignores them (and not the source)."""
    written = ["mlflow.db", "data/demo/manifest.jsonl", "runs/b/model/model.yaml", "model-store/x.mar",
               "evaluation.json", ".env", "khmer-ocr-bundle/run.sh", ".khmer-ocr/platform.json"]  # fmt: skip
    source = ["khmer_ocr/data/writer.py", ".env.example", "docs/dataset-format.md"]
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", *written, *source], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode in (0, 1), done.stderr  # 128: not a git checkout
    assert sorted(done.stdout.split()) == sorted(written)
