"""Recognizer models: presets, shapes, decoding, padding invariance, export, and learning one batch."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from khmer_ocr.config import from_dict, to_dict
from khmer_ocr.models import (
    EOS,
    SIZES,
    SOS,
    CTCRecognizer,
    HybridRecognizer,
    ModelConfig,
    TracedCTC,
    build_model,
    count_parameters,
    ctc_best_path,
    decoder_targets,
    fuse_for_inference,
    trace_ctc_model,
)
from khmer_ocr.script import default_charset

ARCHS = ("hybrid", "ctc", "fast")

# TorchScript is what the serving stack loads; torch 2.13 marks torch.jit as deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

# Exact parameter counts at 203 classes (the ModelConfig default; the trainer sets len(charset)).
# A change here is a change of architecture.
PARAMS = {
    ("hybrid", "tiny"): 673_126,
    ("hybrid", "small"): 12_486_006,
    ("hybrid", "medium"): 16_535_414,
    ("hybrid", "large"): 28_624_982,
    ("ctc", "tiny"): 500_315,
    ("ctc", "small"): 10_814_763,
    ("ctc", "medium"): 14_161_323,
    ("ctc", "large"): 26_250_891,
    ("fast", "tiny"): 89_195,
    ("fast", "small"): 337_563,
    ("fast", "base"): 593_611,
    ("fast", "base_stride3"): 590_747,
    ("fast", "deep_stride3"): 669_467,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Small models on a shared machine: one thread is faster and immune to busy cores (OpenMP spin)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny(arch: str, **kw) -> torch.nn.Module:
    return build_model(ModelConfig(arch=arch, size="tiny", **kw))


def frames(arch: str, width: int) -> int:
    return math.ceil(width / 4) if arch == "fast" else width // 4


def padded_batch(widths: list[int], height: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ink (1.0) on paper (0.0), each line right-padded with 0 to the widest."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.zeros(len(widths), 1, height, max(widths))
    for i, w in enumerate(widths):
        images[i, :, :, :w] = (torch.rand(1, height, w, generator=gen) > 0.7).float()
    return images, torch.tensor(widths)


def test_models_fit_the_default_charset() -> None:
    classes = len(default_charset())
    for arch in ARCHS:
        out = tiny(arch, num_classes=classes).eval()(*padded_batch([64]))
        assert out["ctc_logits"].shape[-1] == classes


def test_parameter_counts_of_every_preset() -> None:
    assert set(PARAMS) == {(arch, size) for arch, sizes in SIZES.items() for size in sizes}
    for (arch, size), expected in PARAMS.items():
        with torch.device("meta"):
            model = build_model(ModelConfig(arch=arch, size=size, num_classes=203))
        assert count_parameters(model) == expected, (arch, size)
    for size, millions in {"small": 12.5, "medium": 16, "large": 29}.items():
        assert abs(PARAMS["hybrid", size] / 1e6 / millions - 1) <= 0.10, size
    assert PARAMS["hybrid", "tiny"] < 1e6 and PARAMS["ctc", "tiny"] < 1e6
    assert 1e5 < PARAMS["fast", "small"] < 2e6 and 1e5 < PARAMS["fast", "base"] < 2e6


def test_unknown_arch_or_size_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="choices: \\['ctc', 'fast', 'hybrid'\\]"):
        build_model(ModelConfig(arch="transformer"))
    with pytest.raises(ValueError, match="'tiny', 'small', 'base'"):
        build_model(ModelConfig(arch="fast", size="large"))
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model(ModelConfig(arch="ctc", size="tiny", input_height=40))
    with pytest.raises(ValueError, match="divisible by heads"):
        build_model(ModelConfig(arch="hybrid", size="tiny", heads=5))


def test_config_round_trips_through_a_dict() -> None:
    cfg = ModelConfig(arch="fast", size="base", heads=8, rnn_hidden=0)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(ModelConfig, {"arch": "fast", "layers": 3})


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("width", [64, 203])
def test_forward_shapes(arch: str, width: int) -> None:
    model = tiny(arch).eval()
    images, widths = padded_batch([width, width - 30])
    targets = torch.tensor([[SOS, 5, 6, 7], [SOS, 8, 0, 0]])
    out = model(images, widths, targets if arch == "hybrid" else None)
    t = frames(arch, width)
    assert out["ctc_logits"].shape == (2, t, 203)
    assert out["ctc_lengths"].tolist() == [t, frames(arch, width - 30)]
    if arch == "hybrid":
        assert out["logits"].shape == (2, 4, 203)
    else:
        assert "logits" not in out


def test_hybrid_without_targets_gives_only_ctc_outputs() -> None:
    out = tiny("hybrid").eval()(*padded_batch([80]))
    assert set(out) == {"ctc_logits", "ctc_lengths"}


@pytest.mark.parametrize("arch", ARCHS)
def test_decode_returns_lists_of_ids_and_probabilities(arch: str) -> None:
    model = tiny(arch, max_length=12).eval()
    ids, probs = model.decode(*padded_batch([120, 16, 90]))
    assert len(ids) == len(probs) == 3
    for row_ids, row_probs in zip(ids, probs, strict=True):
        assert isinstance(row_ids, list) and isinstance(row_probs, list)
        assert len(row_ids) == len(row_probs) <= (12 if arch == "hybrid" else 30)
        assert all(isinstance(i, int) and i > EOS for i in row_ids)
        assert all(isinstance(p, float) and 0.0 < p <= 1.0 for p in row_probs)


def test_ctc_best_path_collapses_repeats_and_drops_blanks() -> None:
    # frames: 5 5 0 5 6 6 2 7 | padding 9 9
    path = [5, 5, 0, 5, 6, 6, 2, 7, 9, 9]
    logits = torch.full((1, len(path), 12), -10.0)
    for t, k in enumerate(path):
        logits[0, t, k] = 0.0 if t != 1 else 3.0  # the second frame of the first run is the most certain
    ids, probs = ctc_best_path(logits, torch.tensor([8]))
    assert ids == [[5, 5, 6, 7]]
    assert probs[0][0] == pytest.approx(logits[0, 1].softmax(-1).max().item())
    assert probs[0][0] > probs[0][1]


@pytest.mark.parametrize("arch", ARCHS)
def test_outputs_do_not_depend_on_batch_padding(arch: str) -> None:
    model = tiny(arch, max_length=8).eval()
    widths = [203, 57, 130, 16]
    images, w = padded_batch(widths)
    batch_out = model(images, w)
    batch_ids, batch_probs = model.decode(images, w)
    for i, width in enumerate(widths):
        alone = images[i : i + 1, :, :, :width]
        out = model(alone, w[i : i + 1])
        t = int(out["ctc_lengths"][0])
        assert t == int(batch_out["ctc_lengths"][i]) == out["ctc_logits"].shape[1]
        torch.testing.assert_close(out["ctc_logits"][0], batch_out["ctc_logits"][i, :t], atol=1e-5, rtol=1e-5)
        ids, probs = model.decode(alone, w[i : i + 1])
        assert ids[0] == batch_ids[i]
        assert probs[0] == pytest.approx(batch_probs[i], abs=1e-5)
        more_padding = F.pad(alone, (0, 77))
        torch.testing.assert_close(
            model(more_padding, w[i : i + 1])["ctc_logits"][0, :t], out["ctc_logits"][0]
        )


def test_hybrid_greedy_decoding_agrees_with_teacher_forcing() -> None:
    model = tiny("hybrid", max_length=10).eval()
    images, widths = padded_batch([150, 70])
    with torch.inference_mode():
        encoded, lengths = model.encode(images, widths)
        ids, probs = model.decoder.greedy(encoded, lengths)
        for i, row in enumerate(ids.tolist()):
            n = row.index(EOS) + 1 if EOS in row else len(row)
            inputs = torch.tensor([[SOS, *row[: n - 1]]])
            logits = model.decoder(encoded[i : i + 1], lengths[i : i + 1], inputs)[0]
            assert logits.argmax(-1).tolist() == row[:n]
            torch.testing.assert_close(logits.softmax(-1).max(-1).values, probs[i, :n], atol=1e-5, rtol=1e-5)
    decoded, _ = model.decode(images, widths)
    assert decoded == [
        [t for t in row[: row.index(EOS) if EOS in row else 10] if t > EOS] for row in ids.tolist()
    ]


def test_decoder_targets() -> None:
    inputs, labels = decoder_targets([[7, 8, 9], [5], []])
    assert inputs.tolist() == [[SOS, 7, 8, 9], [SOS, 5, 0, 0], [SOS, 0, 0, 0]]
    assert labels.tolist() == [[7, 8, 9, EOS], [5, EOS, 0, 0], [EOS, 0, 0, 0]]


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_round_trip_and_folded_batchnorm(arch: str) -> None:
    model = tiny(arch)
    model.train()
    for _ in range(2):  # give BatchNorm non-trivial running statistics
        model(*padded_batch([100, 80], seed=3))
    model.eval()
    rebuilt = build_model(from_dict(ModelConfig, to_dict(model.config)))
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    images, widths = padded_batch([140, 96], seed=4)
    expected = model(images, widths)["ctc_logits"]
    torch.testing.assert_close(rebuilt(images, widths)["ctc_logits"], expected)
    fused = fuse_for_inference(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d) for m in fused.modules())
    torch.testing.assert_close(fused(images, widths)["ctc_logits"], expected, atol=1e-4, rtol=1e-4)
    assert model.decode(images, widths)[0] == fused.decode(images, widths)[0]


@pytest.mark.parametrize(("arch", "size"), [("fast", "small"), ("fast", "tiny"), ("ctc", "tiny")])
def test_traced_export_matches_eager_at_other_widths(arch: str, size: str) -> None:
    model = build_model(ModelConfig(arch=arch, size=size)).eval()
    buffer = io.BytesIO()
    torch.jit.save(trace_ctc_model(model, width=200), buffer)
    buffer.seek(0)
    traced = torch.jit.load(buffer)
    batches = [padded_batch([500]), padded_batch([200]), padded_batch([500, 310, 64])]
    batches.append((F.pad(batches[-1][0], (0, 40)), batches[-1][1]))  # padded past the widest line
    for images, widths in batches:
        got, expected = traced(images, widths), model(images, widths)
        assert torch.equal(got["ctc_lengths"], expected["ctc_lengths"])
        torch.testing.assert_close(got["ctc_logits"], expected["ctc_logits"], atol=1e-4, rtol=1e-4)
    with pytest.raises(TypeError, match=r"only CTC recognizers \('ctc', 'fast'\) export"):
        trace_ctc_model(tiny("hybrid"))


def test_the_recognizer_serves_ctc_models_traced_with_the_eager_readings() -> None:
    """Recognizer.load serves the reference model traced (TracedCTC): the same text and confidence as the
    BatchNorm-folded eager model, one line at a time and in padded batches."""
    from PIL import Image

    from khmer_ocr.data.render import line_ink, load_font
    from khmer_ocr.inference import Recognizer, load_model
    from khmer_ocr.model_folder import REFERENCE_MODEL

    recognizer = Recognizer.load()
    assert isinstance(recognizer.model, TracedCTC)
    assert recognizer.lm is not None  # both decode with the folder's language model
    eager = Recognizer(
        fuse_for_inference(load_model(REFERENCE_MODEL)[0]),
        recognizer.cfg,
        recognizer.charset,
        lm=recognizer.lm,
        decoding=recognizer.decoding,
    )
    font = load_font("/usr/share/fonts/truetype/khmeros/KhmerOS.ttf", 32)
    images = [Image.fromarray(255 - line_ink(t, font)) for t in ("ព្រះរាជាណាចក្រ", "ភាសាខ្មែរ ១២៣", "សួស្តី")]
    blank = Image.new("L", (300, 48), 255)
    for batch_size in (1, 8):
        got = recognizer.predict([*images, blank], batch_size=batch_size)
        expected = eager.predict([*images, blank], batch_size=batch_size)
        assert [p.text for p in got] == [p.text for p in expected]
        assert got[0].text and got[-1].text == ""
        for a, b in zip(got, expected, strict=True):
            assert a.confidence == pytest.approx(b.confidence, abs=1e-4)


def synthetic_lines() -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """Four lines drawn from a fixed random 32x10 glyph per token id, 4 px apart."""
    gen = torch.Generator().manual_seed(1)
    glyphs = {t: (torch.rand(32, 10, generator=gen) > 0.5).float() for t in range(4, 10)}
    seqs = [[4, 5, 6], [7, 8, 9, 4], [9, 9, 5, 6, 7], [6, 4]]
    widths = [len(s) * 14 + 8 for s in seqs]
    images = torch.zeros(len(seqs), 1, 48, max(widths))
    for i, seq in enumerate(seqs):
        for j, token in enumerate(seq):
            images[i, 0, 8:40, 4 + j * 14 : 14 + j * 14] = glyphs[token]
    return images, torch.tensor(widths), seqs


@pytest.mark.parametrize(("arch", "lr"), [("fast", 1e-2), ("hybrid", 3e-3)])
def test_tiny_model_overfits_one_batch(arch: str, lr: float) -> None:
    images, widths, seqs = synthetic_lines()
    model = tiny(arch, dropout=0.0, max_length=10)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    flat = torch.tensor([t for s in seqs for t in s])
    target_lengths = torch.tensor([len(s) for s in seqs])
    inputs, labels = decoder_targets(seqs)
    decoded = None
    for step in range(1, 151):
        model.train()
        out = model(images, widths, inputs if isinstance(model, HybridRecognizer) else None)
        log_probs = out["ctc_logits"].log_softmax(-1).transpose(0, 1)
        loss = F.ctc_loss(log_probs, flat, out["ctc_lengths"], target_lengths, zero_infinity=True)
        if isinstance(model, HybridRecognizer):
            ce = F.cross_entropy(out["logits"].flatten(0, 1), labels.flatten(), ignore_index=0)
            loss = ce + 0.3 * loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            decoded = model.eval().decode(images, widths)[0]
            if decoded == seqs:
                break
    assert decoded == seqs
    if isinstance(model, CTCRecognizer):
        out = trace_ctc_model(model)(images, widths)
        assert ctc_best_path(out["ctc_logits"], out["ctc_lengths"])[0] == seqs


def test_bilstm_equals_packed_sequences_in_values_and_gradients() -> None:
    """The unpacked two-direction encoder computes exactly what packing the batch computes."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from khmer_ocr.models.backbones import BiLSTMEncoder

    for layers in (1, 2):
        encoder = BiLSTMEncoder(24, 16, layers).eval()
        x = torch.randn(5, 40, 24, requires_grad=True)
        lengths = torch.tensor([40, 33, 12, 1, 27])
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        reference = pad_packed_sequence(encoder.rnn(packed)[0], batch_first=True, total_length=40)[0]
        out = encoder(x, lengths)
        torch.testing.assert_close(out, reference, atol=1e-6, rtol=1e-5)
        (grad_ref,) = torch.autograd.grad(reference.square().sum(), x)
        (grad,) = torch.autograd.grad(encoder(x, lengths).square().sum(), x)
        torch.testing.assert_close(grad, grad_ref, atol=1e-6, rtol=1e-5)
        assert out[2, 12:].abs().sum() == 0  # padding frames stay 0


@pytest.mark.parametrize("height", [32, 48])
def test_stride3_fast_model_gives_a_frame_per_three_columns(height: int) -> None:
    model = build_model(ModelConfig(arch="fast", size="base_stride3", input_height=height)).eval()
    assert model.backbone.width_stride == 3
    widths = [301, 100, 17]
    images, w = padded_batch(widths, height=height)
    out = model(images, w)
    assert out["ctc_lengths"].tolist() == [math.ceil(x / 3) for x in widths]
    assert out["ctc_logits"].shape[1] == math.ceil(max(widths) / 3)
    alone = model(images[1:2, :, :, :100], w[1:2])["ctc_logits"][0]
    torch.testing.assert_close(alone, out["ctc_logits"][1, :34], atol=1e-5, rtol=1e-5)


def test_deep_stride3_grown_from_base_stride3_reads_as_it_did() -> None:
    """The two residual blocks deep_stride3 adds start as the identity: with base_stride3's weights (the same
    names) it gives base_stride3's logits, so training it from a trained base_stride3 starts where that
    model stands."""
    base = build_model(ModelConfig(arch="fast", size="base_stride3")).eval()
    with torch.no_grad():
        for module in base.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # trained-looking statistics and scales
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    deep = build_model(ModelConfig(arch="fast", size="deep_stride3"))
    missing, unexpected = deep.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and {k.split(".")[2] for k in missing} == {"6", "7"}, missing
    images, widths = padded_batch([300, 120])
    torch.testing.assert_close(deep.eval()(images, widths)["ctc_logits"], base(images, widths)["ctc_logits"])


def test_fast_backbone_refuses_strides_it_cannot_serve() -> None:
    from khmer_ocr.models.backbones import FastBackbone

    with pytest.raises(ValueError, match="width by 2, 3 or 4"):
        FastBackbone(8, ((16, (2, 2)), (16, (2, 2)), (16, (2, 2))), 32, 48)  # width stride 16
    with pytest.raises(ValueError, match="height by 16"):
        FastBackbone(8, ((16, (2, 1)),), 32, 48)
