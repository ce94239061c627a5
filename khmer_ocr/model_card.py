"""Model cards: what a model is, what it was trained on, how well it does, and how to reproduce it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from khmer_ocr.evaluation.report import EvaluationReport
from khmer_ocr.inference import load_model
from khmer_ocr.model_folder import WEIGHTS
from khmer_ocr.models import count_parameters


def write_card(
    model_dir: str | Path,
    report: EvaluationReport,
    data_card: dict,
    train_config: dict,
    history: list[dict],
    commands: list[str],
    notes: str = "",
) -> Path:
    """Write card.md and metrics.json into the model folder from a real evaluation report; `notes`
    (markdown: ablations, data, licences) goes before the commands that reproduce it."""
    model_dir = Path(model_dir)
    model, cfg, charset = load_model(model_dir)
    size_mb = (model_dir / WEIGHTS).stat().st_size / 1e6
    lines = [
        f"# khmer-ocr model: {train_config.get('name', 'model')}",
        "",
        f"- architecture: `{cfg.arch}` / `{cfg.size}`, {count_parameters(model):,} parameters, input height "
        f"{cfg.input_height} px, any width; `{WEIGHTS}` {size_mb:.1f} MB; charset {charset.version}",
        f"- trained on dataset `{data_card.get('version')}` ({data_card.get('num_samples')} synthetic lines, "
        f"{len([f for f in data_card.get('fonts', []) if f['role'] == 'train'])} training fonts), "
        f"{len(history)} epochs; best validation sequence accuracy "
        f"{max((h['val_sequence_accuracy'] for h in history), default=0):.2%}",
        f"- evaluated on `{report.dataset_version}`: {report.latency.get('ms_p50', 0):.2f} ms per line "
        "(median, batch 1, one CPU thread, preprocessing included)",
        f"- pages are read with the line finder `{report.line_finder_version}` (classical, no weights: "
        "khmer_ocr.pages.layout) and this model",
        "",
        "## Metrics on the project's test splits",
        "",
        "| split | lines | character accuracy | sequence accuracy | CER | cluster CER |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in report.splits.items():
        lines.append(
            f"| {name} | {m['n_lines']} | {m['char_accuracy']:.2%} | {m['sequence_accuracy']:.2%} "
            f"| {m['cer']:.4f} | {m['cluster_cer']:.4f} |"
        )
    if report.levels:
        keys = sorted({k for per in report.levels.values() for k in per}, key=lambda k: (not k.isdigit(), k))
        lines += [
            "",
            "## CER per difficulty level",
            "",
            "| split | " + " | ".join(f"level {k}" for k in keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        for name, per in report.levels.items():
            cells = [f"{per[k]['cer']:.2%} ({per[k]['n_lines']})" if k in per else "-" for k in keys]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if (pages := report.page_report) is not None:
        version = f"`{pages.dataset_version}`" if pages.dataset_version else f"`{pages.dataset}`"
        lines += [
            "",
            f"## Page reading ({version}, splits {', '.join(pages.splits)}; not gated)",
            "",
            "Line recall and precision: found lines matching true ones at box IoU >= 0.5; page CER: each "
            "page's lines joined by newlines in reading order; find ms/page: the line finder alone, one "
            "thread.",
            "",
            pages.table(),
        ]
        if pages.latency:
            lines += [
                "",
                f"Whole pages (find + read, one at a time, one thread): {pages.latency['ms_p50']:.1f} ms.",
            ]
    lines += ["", "## Gates (primary split: " + report.primary_split + ")", ""]
    lines += [
        f"- {'PASS' if g['passed'] else 'FAIL'} {g['name']}: {g['value']} {g['op']} {g['threshold']}"
        for g in report.gates
    ]
    lines += [
        "",
        "## Training history",
        "",
        "| epoch | loss | val char acc | val seq acc | samples/s | samples seen | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {h['epoch']} | {h['loss']:.4f} | {h['val_char_accuracy']:.2%} | "
        f"{h['val_sequence_accuracy']:.2%} | {h['samples_per_s']:.0f} | {h.get('samples', '-')} | "
        f"{h['elapsed_min']:.0f} |"
        if "elapsed_min" in h
        else f"| {h['epoch']} | {h['loss']:.4f} | {h['val_char_accuracy']:.2%} | "
        f"{h['val_sequence_accuracy']:.2%} | {h['samples_per_s']:.0f} | - | - |"
        for h in history
    ]
    if notes:
        lines += ["", notes.strip()]
    lines += [
        "",
        "## Reproduce",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "Training configuration:",
        "",
        "```yaml",
        yaml.safe_dump(train_config, sort_keys=False).strip(),
        "```",
        "",
    ]
    (model_dir / "card.md").write_text("\n".join(lines), encoding="utf-8")
    (model_dir / "metrics.json").write_text(json.dumps(report.to_dict(), ensure_ascii=False, indent=1))
    return model_dir / "card.md"
