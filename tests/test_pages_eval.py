"""Page evaluation for real: a generated and validated page dataset read by the reference model through
`khmer-ocr evaluate` (the dataset's kind from its card), and the page metrics beside the line metrics in
a real MLflow (run metrics, version tags with the line finder's version, the model card, `khmer-ocr
models`)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from khmer_ocr.cli import main
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.format import DatasetError
from khmer_ocr.data.reader import Dataset
from khmer_ocr.data.validation import validate_dataset
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.evaluation.metrics import score
from khmer_ocr.evaluation.pages import load_pages
from khmer_ocr.model_folder import REFERENCE_MODEL
from khmer_ocr.pages import LINE_FINDER_VERSION, PageReader
from khmer_ocr.pages.metrics import match_boxes


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Eight validated synthetic pages (test texts only, small pages) and a small line dataset."""
    root = tmp_path_factory.mktemp("page-eval")
    cfg = DataConfig(name="pe", kind="pages", num_samples=8, shard_size=8, seed=13, splits=["test"])
    cfg.pages.width, cfg.pages.screen_width, cfg.pages.lines = (640, 760), (640, 760), (3, 6)
    generate_dataset(cfg, root / "pages", workers=1, progress=False)
    assert validate_dataset(str(root / "pages"), progress=False).success
    lines = DataConfig(name="le", num_samples=120, shard_size=120, seed=5, difficulty={1: 1.0})
    generate_dataset(lines, root / "lines", workers=1, progress=False)
    gates = root / "open.yaml"
    gates.write_text("gates:\n  - {name: any, metric: char_accuracy, op: '>=', threshold: 0.0}\n")
    return {"pages": str(root / "pages"), "lines": str(root / "lines"), "gates": str(gates)}


def test_evaluate_reads_a_page_dataset_per_kind(datasets: dict, tmp_path: Path, capsys) -> None:
    pages_uri = datasets["pages"]
    assert Dataset(pages_uri).kind == "pages" and Dataset(datasets["lines"]).kind == "lines"
    out = tmp_path / "pages.json"
    assert main(["evaluate", "--data", pages_uri, "--report", str(out)]) == 0
    assert "line recall" in capsys.readouterr().out
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["line_finder_version"] == LINE_FINDER_VERSION
    # the same pages scored independently: the reference model's pages, matched and joined here
    pages, _ = load_pages(pages_uri)
    read = PageReader.load().read([p.image for p in pages])
    kinds = {p.kind for p in pages}
    assert list(report["kinds"]) == [
        *sorted(kinds, key=lambda k: min(p.level for p in pages if p.kind == k)),
        "all",
    ]
    for kind, m in report["kinds"].items():
        mine = [(p, r) for p, r in zip(pages, read, strict=True) if kind in ("all", p.kind)]
        found = [[ln.box for ln in r.lines] for _, r in mine]
        matched = sum(len(match_boxes(p.boxes, f)) for (p, _), f in zip(mine, found, strict=True))
        assert m["pages"] == len(mine) and m["lines"] == sum(len(p.boxes) for p, _ in mine)
        assert m["matched"] == matched and m["found"] == sum(map(len, found))
        assert m["line_recall"] == pytest.approx(matched / m["lines"])
        assert m["page_cer"] == pytest.approx(score([p.text for p, _ in mine], [r.text for _, r in mine]).cer)
        assert m["ms_p50"] > 0
    total = report["kinds"]["all"]
    assert total["line_recall"] >= 0.9 and total["line_precision"] >= 0.9 and total["page_cer"] < 0.2, total
    assert report["latency"]["n_calls"] == len(pages)
    # a page dataset is no line dataset: the line evaluation says so instead of reading pages as lines
    from khmer_ocr.evaluation.evaluate import evaluate

    with pytest.raises(DatasetError, match="kind pages"):
        evaluate(None, pages_uri)


def test_page_metrics_beside_line_metrics_in_mlflow_and_the_card(
    datasets: dict, mlflow_env: str, tmp_path: Path, capsys
) -> None:
    from mlflow import MlflowClient

    from khmer_ocr import registry
    from khmer_ocr.model_card import write_card
    from khmer_ocr.tracking import log_model_folder

    name = f"khmer-ocr-pages-{uuid.uuid4().hex[:8]}"
    run_id = log_model_folder(REFERENCE_MODEL, tracking_uri=mlflow_env)
    info = registry.register(
        run_id, data=datasets["lines"], gates=datasets["gates"], page_data=datasets["pages"], name=name
    )
    report = registry.run_evaluation(run_id)
    pages = report.page_report
    assert pages is not None and pages.dataset == datasets["pages"] and report.passed  # gates: lines only
    assert [g["metric"] for g in report.gates] == ["char_accuracy"]
    total = pages.kinds["all"]
    assert info.tags["line_finder_version"] == LINE_FINDER_VERSION
    assert info.tags["metric.page_cer"] == f"{total['page_cer']:.6f}"
    assert info.tags["metric.line_recall"] == f"{total['line_recall']:.6f}"
    run = MlflowClient().get_run(run_id)
    assert run.data.tags["line_finder_version"] == LINE_FINDER_VERSION
    for key in ("page_cer", "line_recall", "line_precision"):
        assert run.data.metrics[f"eval_{key}"] == pytest.approx(total[key])
    assert "eval_test_char_accuracy" in run.data.metrics  # the line metrics, as before
    for kind in (k for k in pages.kinds if k != "all"):
        assert run.data.metrics[f"eval_page_{kind}_cer"] == pytest.approx(pages.kinds[kind]["page_cer"])
    registry.approve(info.version, by="ci", name=name)
    assert (
        registry.CHAMPION in registry.promote(info.version, by="ci", name=name).aliases
    )  # evidence reads it

    capsys.readouterr()
    assert main(["models", "--name", name]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert f"{total['page_cer']:.2%}" in row and LINE_FINDER_VERSION in row

    model = tmp_path / "model"
    shutil.copytree(REFERENCE_MODEL, model)
    card = write_card(model, report, {"version": "v"}, {"name": "ref"}, [], ["khmer-ocr ..."]).read_text()
    assert f"line finder `{LINE_FINDER_VERSION}`" in card and "## Page reading" in card
    assert card.index("## Page reading") < card.index("## Gates")
    for kind, m in pages.kinds.items():
        assert f"| {kind} | {m['pages']} | {m['lines']} | {m['line_recall']:.2%} |" in card
