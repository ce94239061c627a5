"""Training: phase configs, losses, batching, a tiny model trained, resumed exactly, evaluated, predicting."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from khmer_ocr.config import ConfigError
from khmer_ocr.data.config import DataConfig
from khmer_ocr.data.writer import generate_dataset
from khmer_ocr.models.char_lm import CharNgramLM
from khmer_ocr.names import PHASE3_1
from khmer_ocr.script import default_charset
from khmer_ocr.training.config import load_train_config
from khmer_ocr.training.data import width_batches
from khmer_ocr.training.losses import LossConfig, RecognitionLoss, focal_loss, hierarchical_loss
from khmer_ocr.training.trainer import train

TINY = ["model.size=tiny", "optim.batch_size=8", "data.max_val_lines=16"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("train") / "ds"
    cfg = DataConfig(name="t", num_samples=240, shard_size=120, seed=3, difficulty={1: 0.7, 2: 0.3})
    generate_dataset(cfg, out, workers=2, progress=False)
    return str(out)


@pytest.mark.parametrize("name", [f"phase3_1/{n}" for n in PHASE3_1] + ["phase3_2", "production_fast"])
def test_every_phase_config_loads_and_runs_a_step(name: str, dataset: str, tmp_path: Path) -> None:
    cfg = load_train_config(
        name,
        "demo",
        [
            f"data.dataset={dataset}",
            "optim.batch_size=2",
            "optim.epochs=1",
            "max_steps_per_epoch=1",
            "data.max_val_lines=2",
        ],
    )
    assert cfg.name == name.split("/")[-1]
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.epochs_run == 1 and np.isfinite(result.history[0]["loss"])
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    # a CTC model folder gets the reference model's language model (it decodes as the reference model)
    assert (tmp_path / "run" / "model" / "lm.safetensors").is_file() == (cfg.model.arch in ("ctc", "fast"))


def test_phase_configs_keep_the_founding_values() -> None:
    expect = {
        "conservative_small": ("hybrid", "small", 32, 0.001),
        "baseline_optimized": ("hybrid", "medium", 64, 0.002),
        "focal_loss_experiment": ("hybrid", "medium", 64, 0.0015),
        "aggressive_learning": ("hybrid", "medium", 128, 0.003),
        "fast_convergence": ("hybrid", "medium", 96, 0.005),
        "large_model_regularized": ("hybrid", "large", 32, 0.0005),
    }
    for name, (arch, size, batch, lr) in expect.items():
        cfg = load_train_config(f"phase3_1/{name}")
        assert (cfg.model.arch, cfg.model.size, cfg.optim.batch_size, cfg.optim.lr) == (arch, size, batch, lr)
    assert load_train_config("phase3_1/focal_loss_experiment").loss.kind == "focal"
    assert load_train_config("phase3_1/ctc_alignment_free").model.arch == "ctc"
    p32 = load_train_config("phase3_2")
    assert p32.model.heads == 8 and p32.model.dropout == 0.1 and p32.optim.epochs == 100
    assert (
        p32.early_stopping_patience == 15 and p32.optim.grad_clip == 1.0 and p32.amp and p32.data.curriculum
    )
    assert p32.loss.kind == "focal" and p32.loss.hierarchical_weight > 0 and p32.loss.confidence_weight > 0
    assert p32.loss.ctc_weight > 0


def test_losses() -> None:
    torch.manual_seed(0)
    n = len(default_charset())
    logits, gold = torch.randn(50, n), torch.randint(4, n, (50,))
    ce = torch.nn.functional.cross_entropy(logits, gold)
    assert focal_loss(logits, gold, alpha=1.0, gamma=0.0) == pytest.approx(float(ce), rel=1e-5)
    assert focal_loss(logits, gold, alpha=0.25, gamma=2.0) < 0.25 * ce  # easy tokens are down-weighted
    classes = RecognitionLoss(LossConfig(), default_charset()).classes
    right = torch.full((1, n), -10.0)
    right[0, 4] = 10.0  # ក, a consonant
    wrong_class = torch.full((1, n), -10.0)
    wrong_class[0, default_charset().encode("ា")[0]] = 10.0  # a vowel
    target = torch.tensor([4])
    assert hierarchical_loss(right, target, classes) < 0.01 < hierarchical_loss(wrong_class, target, classes)
    with pytest.raises(ValueError, match="unknown loss kind"):
        RecognitionLoss(LossConfig(kind="dice"), default_charset())


def test_width_batches_are_deterministic_and_cover_the_set() -> None:
    widths = np.random.default_rng(0).integers(50, 900, 1000).astype(float)
    a, b = width_batches(widths, 32, 1, 0), width_batches(widths, 32, 1, 0)
    assert a == b and a != width_batches(widths, 32, 1, 1)
    assert sorted(i for batch in a for i in batch) == list(range(1000))
    spread = np.mean([np.ptp(widths[batch]) for batch in a])
    assert spread < 0.3 * np.ptp(widths)  # batches hold similar widths


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_kill_and_resume_gives_the_same_model(dataset: str, tmp_path: Path, ema_decay: float) -> None:
    cfg = load_train_config(
        "phase3_1/conservative_small",
        None,
        [
            f"data.dataset={dataset}",
            *TINY,
            "optim.epochs=2",
            "max_steps_per_epoch=5",
            "checkpoint_every_steps=2",
            f"optim.ema_decay={ema_decay}",
        ],
    )
    whole = train(cfg, tmp_path / "whole", progress=False)
    part = train(cfg, tmp_path / "resumed", progress=False, stop_after_steps=7)  # stops inside epoch 2
    assert part.epochs_run == 1
    resumed = train(cfg, tmp_path / "resumed", progress=False)

    def without_timing(history: list[dict]) -> list[dict]:
        return [
            {k: v for k, v in row.items() if k not in ("samples_per_s", "elapsed_min")} for row in history
        ]

    assert without_timing(resumed.history) == without_timing(whole.history)
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "ema") if ema_decay else ("model",):
        assert a[key].keys() == b[key].keys() and all(torch.equal(a[key][k], b[key][k]) for k in a[key])


def test_a_run_with_a_running_mean_keeps_the_mean(dataset: str, tmp_path: Path) -> None:
    from khmer_ocr.inference import load_model
    from khmer_ocr.training.transfer import transfer_weights

    base = [f"data.dataset={dataset}", *TINY, "optim.epochs=1", "max_steps_per_epoch=4"]
    cfg = load_train_config("phase3_1/conservative_small", None, [*base, "optim.ema_decay=0.5"])
    train(cfg, tmp_path / "run", progress=False)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    mean = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")}
    kept = load_model(tmp_path / "run" / "model")[0].state_dict()
    assert kept.keys() == mean.keys() and all(torch.equal(kept[k], mean[k]) for k in kept)
    assert not all(torch.equal(ckpt["model"][k], mean[k]) for k in mean)  # the mean, not the last step
    model = load_model(tmp_path / "run" / "model")[0]
    torch.nn.init.zeros_(next(model.parameters()))
    transfer_weights(model, tmp_path / "run" / "checkpoints" / "last.pt")  # init_from a checkpoint: the mean
    assert all(torch.equal(model.state_dict()[k], mean[k]) for k in mean)
    # a run that kept no mean cannot be resumed as one that does
    plain = load_train_config("phase3_1/conservative_small", None, [*base, "optim.epochs=2"])
    train(plain, tmp_path / "plain", progress=False, stop_after_steps=2)
    with pytest.raises(ConfigError, match=r"optim\.ema_decay: 0\.0 -> 0\.5"):
        train(
            load_train_config(
                "phase3_1/conservative_small", None, [*base, "optim.ema_decay=0.5", "optim.epochs=2"]
            ),
            tmp_path / "plain",
            progress=False,
        )


def test_tiny_model_learns_then_evaluates_and_predicts(dataset: str, tmp_path: Path) -> None:
    from khmer_ocr.cli import main
    from khmer_ocr.data.reader import Dataset, ShardReader
    from khmer_ocr.evaluation.evaluate import evaluate
    from khmer_ocr.inference import Recognizer

    cfg = load_train_config(
        "production_fast",
        None,
        [f"data.dataset={dataset}", *TINY, "optim.epochs=3", "optim.lr=0.003", "data.curriculum=false"],
    )
    result = train(cfg, tmp_path / "run", progress=False)
    losses = [row["loss"] for row in result.history]
    assert losses[-1] < losses[0]
    report = evaluate(result.model_dir, dataset, max_lines=20, latency_lines=5)
    assert set(report.splits) == {"test", "test_unseen_font"}
    assert {g["name"] for g in report.gates} >= {"milestone_1_char_acc_60", "latency_under_100ms"}
    assert report.latency["ms_p50"] > 0
    ds = Dataset(dataset)
    rec = ds.records[0]
    image = ShardReader(ds).image(rec)
    recognizer = Recognizer.load(result.model_dir)
    light_on_dark = 255 - image
    plain, inverted = recognizer.predict([image, light_on_dark])
    assert 0.0 <= plain.confidence <= 1.0
    assert inverted.text == plain.text and inverted.confidence == pytest.approx(plain.confidence)  # polarity
    # paper added to the right (as in a padded batch) changes nothing a model that reads sees
    reference = Recognizer.load()
    ref_plain, ref_padded = reference.predict([image, np.pad(image, ((0, 0), (0, 200)), constant_values=255)])
    assert ref_plain.text and ref_padded.text == ref_plain.text
    # the CLI writes one JSON line per image; an unreadable one gets an error and the rest still run
    good = tmp_path / "line.png"
    import cv2

    cv2.imwrite(str(good), image)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    manifest = tmp_path / "labels.jsonl"
    manifest.write_text(json.dumps({"image": "line.png"}) + "\n" + json.dumps({"image": "broken.png"}) + "\n")
    out = tmp_path / "pred.jsonl"
    assert (
        main(["predict", "--model", str(result.model_dir), "--manifest", str(manifest), "--output", str(out)])
        == 0
    )
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0]["image"] == "line.png" and "text" in rows[0] and "confidence" in rows[0]
    assert rows[1]["image"] == "broken.png" and "error" in rows[1]


def test_committed_reference_model_reads_clean_lines(dataset: str) -> None:
    """Recognizer.load() with no argument loads the committed model; on clean, short lines (levels 1-2) it
    measured 97.3 % character accuracy when it was committed."""
    from khmer_ocr.data.reader import Dataset, ShardReader
    from khmer_ocr.evaluation import score
    from khmer_ocr.inference import Recognizer

    ds = Dataset(dataset)
    records = ds.records[:100]
    reader = ShardReader(ds)
    preds = Recognizer.load().predict([reader.image(r) for r in records])
    metrics = score([r["text"] for r in records], [p.text for p in preds])
    assert metrics.char_accuracy > 0.9, metrics


def test_distributed_data_parallel_under_torchrun(dataset: str, tmp_path: Path) -> None:
    """Two ranks on the CPU (gloo): the same code path as multi-GPU training under torchrun."""
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [
        str(torchrun),
        "--nproc_per_node=2",
        f"--master_port={port}",
        "-m",
        "khmer_ocr",
        "train",
        "production_fast",
        "--data",
        dataset,
        "--out",
        str(tmp_path / "ddp"),
        "--set",
        "model.size=tiny",
        "--set",
        "optim.batch_size=4",
        "--set",
        "optim.epochs=1",
        "--set",
        "max_steps_per_epoch=3",
        "--set",
        "data.max_val_lines=8",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert len(history) == 1 and history[0]["epoch"] == 1
    assert (tmp_path / "ddp" / "model" / "model.safetensors").is_file()


def test_export_agrees_with_eager_and_refuses_the_hybrid(dataset: str, tmp_path: Path) -> None:
    from khmer_ocr.errors import ExportError
    from khmer_ocr.export import export_torchscript
    from khmer_ocr.inference import Recognizer
    from khmer_ocr.model_folder import REFERENCE_MODEL

    result = export_torchscript(REFERENCE_MODEL, tmp_path / "model.pt")
    assert result.path.is_file() and result.same_decoding and result.max_abs_diff < 1e-3
    traced = torch.jit.load(str(result.path))
    height = Recognizer.load(REFERENCE_MODEL).cfg.input_height
    out = traced(torch.zeros(1, 1, height, 160), torch.tensor([160]))
    assert out["ctc_logits"].shape[0] == 1
    cfg = load_train_config(
        "phase3_1/conservative_small",
        "demo",
        [f"data.dataset={dataset}", *TINY, "optim.epochs=1", "max_steps_per_epoch=1"],
    )
    hybrid = train(cfg, tmp_path / "hybrid", progress=False)
    with pytest.raises(ExportError, match="do not export"):
        export_torchscript(hybrid.model_dir, tmp_path / "hybrid.pt")


def test_overrides_read_floats_as_people_write_them() -> None:
    # YAML 1.1 reads "3e-4" (no dot) as a string; a float field must still get 0.0003
    cfg = load_train_config("production_fast", None, ["optim.lr=3e-4", "optim.weight_decay=1e-2"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == pytest.approx(1e-2)
    with pytest.raises(ConfigError, match=r"optim.lr: expected float, got 'fast'"):
        load_train_config("production_fast", None, ["optim.lr=fast"])
    with pytest.raises(ConfigError, match=r"expected float, got True"):
        load_train_config("production_fast", None, ["optim.lr=true"])


def test_resume_refuses_a_changed_config_but_may_run_longer(dataset: str, tmp_path: Path) -> None:
    base = [f"data.dataset={dataset}", *TINY, "optim.epochs=1", "max_steps_per_epoch=2"]
    cfg = load_train_config("phase3_1/conservative_small", None, base)
    train(cfg, tmp_path / "run", progress=False, stop_after_steps=1)
    changed = load_train_config("phase3_1/conservative_small", None, [*base, "optim.lr=0.5", "seed=99"])
    with pytest.raises(ValueError, match=r"optim.lr: 0.001 -> 0.5, seed: 0 -> 99"):
        train(changed, tmp_path / "run", progress=False)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "lr: 0.001" in saved and "seed: 0" in saved  # the record still tells what the run used
    longer = load_train_config("phase3_1/conservative_small", None, [*base, "optim.epochs=2"])
    result = train(longer, tmp_path / "run", progress=False)
    assert result.epochs_run == 2


def test_sigkill_then_resume_from_an_older_periodic_checkpoint(dataset: str, tmp_path: Path) -> None:
    """A training process killed with SIGKILL (no chance to save anything) somewhere after a periodic
    checkpoint: the same command resumes from that older checkpoint, redoes the lost steps, and ends with
    exactly the model and history of a run that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    overrides = [f"data.dataset={dataset}", *TINY, "optim.epochs=2", "max_steps_per_epoch=8",
                 "checkpoint_every_steps=3"]  # fmt: skip
    cfg = load_train_config("phase3_1/conservative_small", None, overrides)
    whole = train(cfg, tmp_path / "whole", progress=False)

    out = tmp_path / "killed"
    code = (
        "import sys, torch; from khmer_ocr.training.config import load_train_config; "
        "from khmer_ocr.training.trainer import train; torch.set_num_threads(int(sys.argv[1])); "
        "cfg = load_train_config('phase3_1/conservative_small', None, sys.argv[3:]); "
        "train(cfg, sys.argv[2], progress=False)"
    )
    cmd = [sys.executable, "-c", code, str(torch.get_num_threads()), str(out), *overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    last = out / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    try:
        while not last.exists():  # the first periodic checkpoint (step 3 of epoch 1)
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint within 5 minutes"
            time.sleep(0.02)
        time.sleep(0.05)  # a step or so past it
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(last, weights_only=True)["state"]
    assert saved["epoch"] < 2 and saved["step_in_epoch"] in (0, 3, 6), saved  # a periodic or epoch-end one
    assert not (out / "history.json").exists() or saved["epoch"] == 1

    resumed = train(cfg, out, progress=False)

    def without_timing(history: list[dict]) -> list[dict]:
        return [
            {k: v for k, v in row.items() if k not in ("samples_per_s", "elapsed_min")} for row in history
        ]

    assert without_timing(resumed.history) == without_timing(whole.history)
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(last, weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_average_writes_the_mean_of_the_weights_and_refuses_other_architectures(tmp_path: Path) -> None:
    import subprocess
    import sys

    from khmer_ocr.inference import load_model, save_model
    from khmer_ocr.models import ModelConfig, build_model
    from khmer_ocr.training.language_model import copy_language_model

    charset = default_charset()
    cfg = ModelConfig(arch="fast", size="tiny", num_classes=len(charset))
    folders = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        folders.append(str(save_model(build_model(cfg), cfg, charset, tmp_path / f"m{seed}")))
    assert copy_language_model("reference", folders[0])  # the first model's language model comes along
    cli = [sys.executable, "-m", "khmer_ocr", "average", *folders, "--out", str(tmp_path / "soup")]
    done = subprocess.run(cli, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lm = (tmp_path / "soup" / "lm.safetensors").read_bytes()
    assert lm == (Path(folders[0]) / "lm.safetensors").read_bytes()
    # a model folder's files are readable as the umask allows (a server running as another user reads them);
    # safetensors' own save_file would make them 0600
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("model.safetensors", "lm.safetensors", "model.yaml"):
        assert stat.S_IMODE((tmp_path / "soup" / name).stat().st_mode) == 0o666 & ~umask, name
    CharNgramLM.fit(["ក ខ គ"], order=2).save(tmp_path / "lm2.safetensors")
    assert stat.S_IMODE((tmp_path / "lm2.safetensors").stat().st_mode) == 0o666 & ~umask
    soup = load_model(tmp_path / "soup")[0].state_dict()
    a, b = (load_model(f)[0].state_dict() for f in folders)
    for name, value in soup.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (a[name] + b[name]) / 2)
    other = ModelConfig(arch="fast", size="small", num_classes=len(charset))
    save_model(build_model(other), other, charset, tmp_path / "other")
    cli[-3] = str(tmp_path / "other")
    refused = subprocess.run(cli, capture_output=True, text=True)
    assert refused.returncode != 0 and "cannot average" in refused.stderr
