"""Evaluation: metrics (CER / accuracy over NFC code points), error analysis, latency, gates and reports."""

from __future__ import annotations

import json
import random
import time

import pytest

from khmer_ocr.config import ConfigError, load_config, save_config
from khmer_ocr.evaluation import (
    EvaluationReport,
    Gate,
    GateConfig,
    align,
    all_passed,
    build_report,
    edit_distance,
    error_analysis,
    evaluate_gates,
    format_gate,
    load_gates,
    measure_latency,
    score,
    score_by_level,
)
from khmer_ocr.evaluation.metrics import _edit_distance_numpy
from khmer_ocr.script import clusters

COENG = "\u17d2"
AA = "\u17b6"  # ា
I = "\u17b7"  # ិ  # noqa: E741


# ------------------------------------------------------------------------------------------------------
# edit distance
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "hyp", "expected"),
    [
        ("", "", 0),
        ("abc", "", 3),
        ("", "ab", 2),
        ("kitten", "sitting", 3),
        ("ab", "ba", 2),
        ("ស្រី", "សី", 2),
        (["ខ្មែ", "រ"], ["ខែ", "រ"], 1),  # over clusters
    ],
)
def test_edit_distance_known_values(ref, hyp, expected) -> None:
    assert edit_distance(ref, hyp) == expected
    assert _edit_distance_numpy(ref, hyp) == expected


def test_edit_distance_numpy_matches_fast_backend_and_alignment_cost() -> None:
    rng = random.Random(0)
    alphabet = "កខគ" + COENG + AA + I + "ab "
    for _ in range(200):
        r = "".join(rng.choices(alphabet, k=rng.randint(0, 12)))
        h = "".join(rng.choices(alphabet, k=rng.randint(0, 12)))
        d = edit_distance(r, h)
        assert _edit_distance_numpy(r, h) == d
        ops = align(r, h)
        assert sum(op != "equal" for op, _, _ in ops) == d
        # the alignment covers both strings in order
        assert [i for _, i, _ in ops if i is not None] == list(range(len(r)))
        assert [j for _, _, j in ops if j is not None] == list(range(len(h)))


def test_alignment_prefers_same_class_substitutions() -> None:
    # 'កា' read as 'កិx': ា->ិ plus an inserted x, not ា->x plus an inserted ិ (both cost 2 edits)
    assert align("ក" + AA, "ក" + I + "x") == [("equal", 0, 0), ("substitute", 1, 1), ("insert", None, 2)]


# ------------------------------------------------------------------------------------------------------
# score
# ------------------------------------------------------------------------------------------------------


def test_perfect_score() -> None:
    m = score(["ខ្មែរ", "abc"], ["ខ្មែរ", "abc"])
    assert (m.n_lines, m.n_chars, m.char_errors) == (2, 8, 0)
    assert m.cer == 0.0 and m.char_accuracy == 1.0 and m.sequence_accuracy == 1.0 and m.cluster_cer == 0.0


def test_cer_is_pooled_over_the_set_not_averaged_per_line() -> None:
    m = score(["ab", "abcdef"], ["", "abcdef"])
    assert m.n_chars == 8 and m.char_errors == 2
    assert m.cer == pytest.approx(0.25)  # a mean of per-line CERs would be 0.5
    assert m.char_accuracy == pytest.approx(0.75)
    assert m.sequence_accuracy == 0.5


def test_khmer_coeng_cluster_dropped() -> None:
    # ស្រី = ស ្ រ ី (4 code points, 1 cluster); reading it as សី loses COENG and RO: 2 edits
    m = score(["ស្រី"], ["សី"])
    assert (m.n_chars, m.char_errors) == (4, 2)
    assert m.cer == pytest.approx(0.5) and m.char_accuracy == pytest.approx(0.5)
    assert (m.n_clusters, m.cluster_errors, m.cluster_cer) == (1, 1, 1.0)
    assert m.sequence_accuracy == 0.0


def test_cluster_cer_differs_from_char_cer_on_a_subscript_error() -> None:
    ref, hyp = "ភាសាខ្មែរ", "ភាសាខែរ"  # subscript ្ម lost: 2 code points, 1 of 4 clusters
    assert clusters(ref) == ["ភា", "សា", "ខ្មែ", "រ"]
    m = score([ref], [hyp])
    assert m.cer == pytest.approx(2 / 9)
    assert m.cluster_cer == pytest.approx(1 / 4)
    assert m.char_accuracy == pytest.approx(7 / 9)


def test_nfc_composition_is_the_only_normalization() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert edit_distance(composed, decomposed) == 2  # raw code points differ
    m = score([decomposed], [composed])
    assert m.n_chars == 4  # the reference is counted after NFC
    assert m.cer == 0.0 and m.sequence_accuracy == 1.0
    # the project's Khmer normalizer is NOT applied: a vowel typed twice is still an error
    m = score(["ក" + AA], ["ក" + AA + AA])
    assert m.char_errors == 1 and m.sequence_accuracy == 0.0


def test_empty_hypothesis_is_all_deletions() -> None:
    m = score(["abcd"], [""])
    assert m.char_errors == 4 and m.cer == 1.0 and m.char_accuracy == 0.0 and m.cluster_cer == 1.0


def test_insertions_push_cer_above_one_and_accuracy_clamps_to_zero() -> None:
    m = score(["ab"], ["xyzwv"])  # 2 substitutions + 3 insertions over 2 reference characters
    assert m.char_errors == 5
    assert m.cer == pytest.approx(2.5)
    assert m.char_accuracy == 0.0


def test_sequence_accuracy_is_exact_line_match_rate() -> None:
    m = score(["a", "b", "c", "d"], ["a", "b", "c", "x"])
    assert m.sequence_accuracy == pytest.approx(0.75)
    assert m.to_dict()["sequence_accuracy"] == pytest.approx(0.75)


def test_score_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="empty reference set"):
        score([], [])
    with pytest.raises(ValueError, match="pair up"):
        score(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="no characters"):
        score(["", ""], ["", "x"])
    with pytest.raises(TypeError, match=r"line 0: reference and hypothesis must be str, got .*NoneType"):
        score(["a"], [None])  # type: ignore[list-item]


def test_to_dict_has_every_metric() -> None:
    d = score(["ab"], ["ab"]).to_dict()
    for key in (
        "n_lines",
        "n_chars",
        "char_errors",
        "cer",
        "char_accuracy",
        "sequence_accuracy",
        "cluster_cer",
    ):
        assert key in d


# ------------------------------------------------------------------------------------------------------
# error analysis
# ------------------------------------------------------------------------------------------------------


def test_error_analysis_counts_per_class_and_confusions() -> None:
    # line 1: ស្រីកា -> សីកិ  drops COENG + RO and confuses ា -> ិ
    # line 2: កា -> កិ x      confuses ា -> ិ and inserts a space and an x
    refs = ["ស្រីកា", "កា"]
    hyps = ["សីក" + I, "ក" + I + " x"]
    ea = error_analysis(refs, hyps)
    assert (ea["substitutions"], ea["deletions"], ea["insertions"]) == (2, 2, 2)
    assert ea["char_errors"] == score(refs, hyps).char_errors == 6
    assert ea["n_ref_chars"] == 8
    pc = ea["per_class"]
    assert list(pc) == ["consonant", "dependent_vowel", "coeng", "latin", "space"]  # CharClass order
    assert pc["coeng"] == {
        "ref_count": 1,
        "substitutions": 0,
        "deletions": 1,
        "insertions": 0,
        "errors": 1,
        "error_rate": 1.0,
    }
    assert pc["consonant"]["ref_count"] == 4 and pc["consonant"]["deletions"] == 1
    assert pc["consonant"]["error_rate"] == pytest.approx(0.25)
    assert pc["dependent_vowel"]["ref_count"] == 3 and pc["dependent_vowel"]["substitutions"] == 2
    assert pc["latin"] == {
        "ref_count": 0,
        "substitutions": 0,
        "deletions": 0,
        "insertions": 1,
        "errors": 1,
        "error_rate": None,
    }
    assert pc["space"]["insertions"] == 1

    confusions = ea["confusions"]
    assert confusions[0] == {
        "ref": AA,
        "hyp": I,
        "ref_code": "U+17B6",
        "hyp_code": "U+17B7",
        "kind": "substitution",
        "count": 2,
    }
    # the rest (count 1) are ordered by ref then hyp: insertions (ref "") first
    rest = [(c["ref"], c["hyp"], c["kind"]) for c in confusions[1:]]
    assert rest == [
        ("", " ", "insertion"),
        ("", "x", "insertion"),
        ("រ", "", "deletion"),
        (COENG, "", "deletion"),
    ]
    coeng = next(c for c in confusions if c["ref"] == COENG)
    assert coeng["ref_code"] == "U+17D2" and coeng["hyp_code"] == ""
    assert ea["n_distinct_confusions"] == 5
    assert error_analysis(refs, hyps) == ea  # deterministic
    assert len(error_analysis(refs, hyps, top_k=2)["confusions"]) == 2


def test_error_analysis_totals_match_score_on_random_text() -> None:
    rng = random.Random(1)
    alphabet = "កខគស" + COENG + AA + I + "ab "
    refs = ["".join(rng.choices(alphabet, k=rng.randint(1, 15))) for _ in range(50)]
    hyps = ["".join(rng.choices(alphabet, k=rng.randint(0, 15))) for _ in range(50)]
    ea = error_analysis(refs, hyps, top_k=None)
    assert ea["char_errors"] == score(refs, hyps).char_errors
    assert sum(c["errors"] for c in ea["per_class"].values()) == ea["char_errors"]
    assert sum(c["count"] for c in ea["confusions"]) == ea["char_errors"]


def test_error_analysis_of_perfect_output() -> None:
    ea = error_analysis(["ខ្មែរ"], ["ខ្មែរ"])
    assert ea["char_errors"] == 0 and ea["confusions"] == []
    assert all(c["error_rate"] == 0.0 for c in ea["per_class"].values())


# ------------------------------------------------------------------------------------------------------
# latency
# ------------------------------------------------------------------------------------------------------


def test_measure_latency_calls_once_per_input_after_warmup() -> None:
    calls: list[int] = []

    def fn(x: int) -> None:
        calls.append(x)
        time.sleep(0.002)

    stats = measure_latency(fn, [1, 2, 3, 4], warmup=3, repeats=2)
    assert calls == [1, 2, 3] + [1, 2, 3, 4] * 2
    assert stats["n_calls"] == 8
    assert set(stats) >= {"ms_p50", "ms_p95", "ms_mean"}
    assert 2.0 <= stats["ms_p50"] <= stats["ms_p95"]
    assert stats["ms_mean"] >= 2.0
    with pytest.raises(ValueError, match="needs at least one input"):
        measure_latency(fn, [])


# ------------------------------------------------------------------------------------------------------
# gates
# ------------------------------------------------------------------------------------------------------


def test_packaged_milestones() -> None:
    cfg = load_gates()
    by_name = {g.name: g for g in cfg.gates}
    assert list(by_name) == [
        "milestone_1_char_acc_60",
        "milestone_2_char_acc_75",
        "milestone_3_char_acc_85",
        "sequence_accuracy_70",
        "latency_under_100ms",
    ]
    assert (by_name["milestone_1_char_acc_60"].metric, by_name["milestone_1_char_acc_60"].op) == (
        "char_accuracy",
        ">=",
    )
    assert [by_name[n].threshold for n in list(by_name)[:3]] == [0.60, 0.75, 0.85]
    assert by_name["sequence_accuracy_70"].metric == "sequence_accuracy"
    assert by_name["sequence_accuracy_70"].threshold == 0.70
    lat = by_name["latency_under_100ms"]
    assert (lat.metric, lat.op, lat.threshold) == ("latency_ms_p50", "<=", 100.0)
    assert all(g.description for g in cfg.gates)


def test_gates_yaml_round_trip(tmp_path) -> None:
    cfg = load_gates("milestones")
    path = tmp_path / "gates.yaml"
    save_config(cfg, path)
    assert load_gates(path) == cfg
    assert load_gates(str(path)) == cfg
    assert load_config(GateConfig, path) == cfg


def test_unknown_or_invalid_gates_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="milestones"):
        load_gates("no_such_profile")
    with pytest.raises(ConfigError, match="op"):
        Gate("g", "cer", "<", 0.1)
    with pytest.raises(ConfigError, match="duplicate"):
        GateConfig([Gate("g", "cer", "<=", 0.1), Gate("g", "cer", "<=", 0.2)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("gates:\n  - {name: g, metric: cer, op: '==', threshold: 0.1}\n")
    with pytest.raises(ConfigError, match=r"gate 'g': op must be one of \['>=', '<='\], got '=='"):
        load_gates(bad)


@pytest.mark.parametrize(
    ("value", "passed"),
    [(0.60, True), (1 - 0.4, True), (0.61, True), (0.5999, False), (0.0, False)],
)
def test_greater_equal_gate_boundary(value: float, passed: bool) -> None:
    cfg = GateConfig([Gate("m1", "char_accuracy", ">=", 0.60)])
    (result,) = evaluate_gates({"char_accuracy": value}, cfg)
    assert result.passed is passed
    assert result.value == value


@pytest.mark.parametrize(("value", "passed"), [(100.0, True), (99.9, True), (100.01, False)])
def test_less_equal_gate_boundary(value: float, passed: bool) -> None:
    cfg = GateConfig([Gate("lat", "latency_ms_p50", "<=", 100)])
    assert evaluate_gates({"latency_ms_p50": value}, cfg)[0].passed is passed


def test_float_rounding_at_the_boundary_passes() -> None:
    cer = 0.1 + 0.2  # 0.30000000000000004: float rounding, not a real difference
    cfg = GateConfig([Gate("cer30", "cer", "<=", 0.3), Gate("acc70", "char_accuracy", ">=", 0.7)])
    assert all_passed(evaluate_gates({"cer": cer, "char_accuracy": 1 - cer}, cfg))
    assert not evaluate_gates({"cer": 0.3 + 1e-9}, cfg)[0].passed


def test_missing_metric_fails_with_a_reason() -> None:
    results = evaluate_gates({"char_accuracy": 0.9}, load_gates())
    by_name = {r.name: r for r in results}
    missing = by_name["latency_under_100ms"]
    assert missing.value is None and missing.passed is False
    assert "latency_ms_p50" in missing.reason
    assert by_name["milestone_3_char_acc_85"].passed
    assert not by_name["sequence_accuracy_70"].passed  # also missing
    assert not all_passed(results)
    assert (
        format_gate(missing) == "FAIL latency_under_100ms: missing <= 100 (metric 'latency_ms_p50' missing)"
    )


def test_all_passed() -> None:
    cfg = GateConfig([Gate("a", "x", ">=", 1), Gate("b", "y", "<=", 1)])
    assert all_passed(evaluate_gates({"x": 1, "y": 1}, cfg))
    assert not all_passed(evaluate_gates({"x": 1, "y": 2}, cfg))
    assert not all_passed([])  # nothing checked is not a pass
    assert all_passed([r.to_dict() for r in evaluate_gates({"x": 1, "y": 1}, cfg)])


# ------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------


def _per_split() -> dict[str, tuple[list[str], list[str]]]:
    # test: 25 reference code points, 3 edits (COENG+MO dropped, one substitution): CER 12 %, 3/5 exact lines
    test = (["ខ្មែរ", "abcde", "abcde", "abcde", "abcde"], ["ខែរ", "abcde", "abcde", "abxde", "abcde"])
    val = (["ភាសា", "ok"], ["ភាសា", "ok"])
    return {"val": val, "test": test}


def test_build_report_json_contents(tmp_path) -> None:
    latency = {"ms_p50": 42.0, "ms_p95": 55.5, "ms_mean": 44.25, "n_calls": 20}
    report = build_report("crnn-v1", "synthetic", "2024.1", _per_split(), latency, load_gates())
    path = report.write(tmp_path / "out" / "report.json")
    text = path.read_text(encoding="utf-8")
    assert "\\u17" not in text and "្" in text  # Khmer (here a confused COENG) is written unescaped
    data = json.loads(text)
    assert (
        data["model"] == "crnn-v1" and data["dataset"] == "synthetic" and data["dataset_version"] == "2024.1"
    )
    assert data["primary_split"] == "test" and data["created_at"]
    assert list(data["splits"]) == ["val", "test"]
    t = data["splits"]["test"]
    assert (t["n_lines"], t["n_chars"], t["char_errors"]) == (5, 25, 3)
    assert t["cer"] == pytest.approx(0.12) and t["char_accuracy"] == pytest.approx(0.88)
    assert t["sequence_accuracy"] == pytest.approx(0.6)
    assert t["cluster_cer"] == pytest.approx(2 / 22)
    assert data["splits"]["val"]["char_accuracy"] == 1.0
    assert data["latency"] == latency
    gates = {g["name"]: g for g in data["gates"]}
    assert gates["milestone_3_char_acc_85"]["passed"] is True
    assert gates["milestone_3_char_acc_85"]["value"] == pytest.approx(0.88)
    assert gates["sequence_accuracy_70"]["passed"] is False
    assert gates["latency_under_100ms"]["passed"] is True and gates["latency_under_100ms"]["value"] == 42.0
    assert data["passed"] is False
    ea = data["error_analysis"]
    assert ea["deletions"] == 2 and ea["substitutions"] == 1
    assert ea["per_class"]["coeng"]["deletions"] == 1
    assert EvaluationReport.read(path) == report


def test_report_summary_lines() -> None:
    latency = {"ms_p50": 42.0, "ms_p95": 55.5, "ms_mean": 44.25}
    report = build_report("crnn-v1", "synthetic", "2024.1", _per_split(), latency, load_gates())
    lines = report.summary().splitlines()
    assert "crnn-v1" in lines[0] and "synthetic@2024.1" in lines[0]
    row = next(line for line in lines if line.startswith("test "))
    assert row.split() == ["test", "5", "25", "12.00%", "88.00%", "60.00%", "9.09%"]
    row = next(line for line in lines if line.startswith("val "))
    assert row.split()[3:] == ["0.00%", "100.00%", "100.00%", "0.00%"]
    assert "PASS milestone_1_char_acc_60: 0.8800 >= 0.6" in lines
    assert "PASS milestone_3_char_acc_85: 0.8800 >= 0.85" in lines
    assert "FAIL sequence_accuracy_70: 0.6000 >= 0.7" in lines
    assert "PASS latency_under_100ms: 42.0000 <= 100" in lines
    assert lines[-1] == "overall: FAIL"
    assert any(line.startswith("latency: p50 42.00 ms") for line in lines)


def test_report_passes_when_every_gate_passes_and_fails_without_latency() -> None:
    per_split = {"test": (["abcde"] * 10, ["abcde"] * 10)}
    ok = build_report("m", "d", None, per_split, {"ms_p50": 5.0}, load_gates())
    assert ok.passed and all(g["passed"] for g in ok.gates)
    assert ok.summary().splitlines()[-1] == "overall: PASS"
    no_latency = build_report("m", "d", None, per_split, {}, load_gates())
    assert not no_latency.passed
    assert "FAIL latency_under_100ms: missing <= 100" in no_latency.summary()


def test_build_report_rejects_bad_splits() -> None:
    with pytest.raises(ValueError, match="primary split 'test'"):
        build_report("m", "d", None, {"val": (["a"], ["a"])}, {}, load_gates())
    with pytest.raises(ValueError, match="split 'val'"):
        build_report("m", "d", None, {"val": ([], []), "test": (["a"], ["a"])}, {}, load_gates())
    custom = build_report("m", "d", None, {"val": (["a"], ["a"])}, {}, load_gates(), primary_split="val")
    assert custom.primary_split == "val"


def test_report_scores_each_difficulty_level(tmp_path) -> None:
    # level 1: "abcd" exact, "xy" -> "xz" (1 edit): 6 chars, CER 1/6, 1 of 2 lines exact
    # level 2: "ខ្មែរ" exact (5 code points): CER 0, all exact
    # level 3: "hello" -> "hallo" (1 edit), "abc" -> "" (3 deletions): 8 chars, CER 4/8, none exact
    refs = ["hello", "abcd", "ខ្មែរ", "xy", "abc"]
    hyps = ["hallo", "abcd", "ខ្មែរ", "xz", ""]
    line_levels = [3, 1, 2, 1, 3]
    per_split = {"test": (refs, hyps), "val": (["ok"], ["ok"])}
    report = build_report(
        "m", "d", None, per_split, {"ms_p50": 5.0}, load_gates(), levels={"test": line_levels}
    )
    assert list(report.levels) == ["test"]  # only splits given levels are scored per level
    by_level = report.levels["test"]
    assert list(by_level) == ["1", "2", "3"]  # JSON-safe keys, in level order
    got = {
        k: (m["n_lines"], m["n_chars"], m["char_errors"], m["sequence_accuracy"]) for k, m in by_level.items()
    }
    assert got == {"1": (2, 6, 1, 0.5), "2": (1, 5, 0, 1.0), "3": (2, 8, 4, 0.0)}
    assert by_level["1"]["cer"] == pytest.approx(1 / 6) and by_level["1"]["char_accuracy"] == pytest.approx(
        5 / 6
    )
    assert by_level["2"]["cer"] == 0.0 and by_level["3"]["cer"] == pytest.approx(0.5)
    # the levels add up to the split; the split's gates are unaffected (pooled: 5 edits / 19 chars)
    whole = report.splits["test"]
    assert sum(m["n_chars"] for m in by_level.values()) == whole["n_chars"] == 19
    assert sum(m["char_errors"] for m in by_level.values()) == whole["char_errors"] == 5
    gate = next(g for g in report.gates if g["name"] == "milestone_3_char_acc_85")
    assert gate["value"] == pytest.approx(14 / 19)
    assert {k: m.to_dict() for k, m in score_by_level(refs, hyps, line_levels).items()} == by_level

    lines = report.summary().splitlines()
    start = lines.index("per difficulty level (1 short and clean .. 5 long and degraded):")
    rows = [line.split() for line in lines[start + 2 : start + 5]]
    assert rows[0] == ["test", "1", "2", "6", "16.67%", "83.33%", "50.00%", "16.67%"]
    assert rows[1][:5] == ["test", "2", "1", "5", "0.00%"]
    assert rows[2][:7] == ["test", "3", "2", "8", "50.00%", "50.00%", "0.00%"]

    path = report.write(tmp_path / "report.json")
    assert json.loads(path.read_text(encoding="utf-8"))["levels"]["test"]["3"]["char_errors"] == 4
    assert EvaluationReport.read(path) == report
    # a report written before levels existed still reads, and its summary has no level table
    old = report.to_dict()
    del old["levels"]
    legacy = EvaluationReport.from_dict(old)
    assert legacy.levels == {} and legacy.splits == report.splits
    assert "per difficulty level" not in legacy.summary()


def test_score_by_level_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 lines but 1 difficulty levels"):
        score_by_level(["a", "b"], ["a", "b"], [1])
    with pytest.raises(ValueError, match="difficulty level 2"):
        score_by_level(["a", ""], ["a", ""], [1, 2])  # level 2 has no reference characters
    assert list(score_by_level(["a", "b", "c"], ["a", "b", "c"], [None, 10, 2])) == ["2", "10", "unknown"]
    with pytest.raises(ValueError, match="not scored"):
        build_report("m", "d", None, {"test": (["a"], ["a"])}, {}, load_gates(), levels={"val": [1]})


def test_evaluate_scores_the_dataset_per_difficulty_level(tmp_path) -> None:
    from khmer_ocr.data.config import DataConfig
    from khmer_ocr.data.reader import Dataset
    from khmer_ocr.data.writer import generate_dataset
    from khmer_ocr.evaluation.evaluate import evaluate

    cfg = DataConfig(name="lv", num_samples=240, shard_size=240, seed=5, difficulty={1: 0.5, 3: 0.5})
    generate_dataset(cfg, tmp_path / "ds", workers=1, progress=False)
    report = evaluate(None, str(tmp_path / "ds"), max_lines=8, latency_lines=2)
    records = Dataset(str(tmp_path / "ds")).records
    assert list(report.levels) == list(report.splits)
    for split, per_level in report.levels.items():
        lines = [r for r in records if r["split"] == split][:8]
        counts = {str(lv): sum(r["difficulty"] == lv for r in lines) for lv in (1, 3)}
        assert {k: m["n_lines"] for k, m in per_level.items()} == {k: n for k, n in counts.items() if n}
        assert sum(m["char_errors"] for m in per_level.values()) == report.splits[split]["char_errors"]
    assert "per difficulty level" in report.summary()


def test_model_card_tables_come_from_the_report(tmp_path) -> None:
    import shutil

    from khmer_ocr.evaluation.gates import load_gates
    from khmer_ocr.evaluation.report import build_report
    from khmer_ocr.model_card import write_card
    from khmer_ocr.model_folder import REFERENCE_MODEL

    model = tmp_path / "model"
    shutil.copytree(REFERENCE_MODEL, model)
    refs, hyps = ["កខ", "គឃ", "ងច"], ["ក ខ", "គ", "ងច"]
    report = build_report(
        "m",
        "d",
        "v1",
        {"test": (refs, hyps)},
        {"ms_p50": 4.5},
        load_gates("demo"),
        levels={"test": [1, 2, 2]},
    )
    history = [
        {
            "epoch": 1,
            "loss": 1.0,
            "val_char_accuracy": 0.5,
            "val_sequence_accuracy": 0.25,
            "samples_per_s": 9.0,
        },
        {
            "epoch": 2,
            "loss": 0.5,
            "val_char_accuracy": 0.7,
            "val_sequence_accuracy": 0.5,
            "samples_per_s": 10.0,
            "samples": 480,
            "elapsed_min": 3.2,
        },
    ]
    card = write_card(
        model, report, {"version": "v1"}, {"name": "x"}, history, ["khmer-ocr ..."], "## Notes\n\nhi"
    )
    text = card.read_text(encoding="utf-8")
    assert "| split | level 1 | level 2 |" in text
    # level 1: a space inserted into 2 code points; level 2: one of 4 code points lost
    assert "| test | 50.00% (1) | 25.00% (2) |" in text
    assert (
        "| 2 | 0.5000 | 70.00% | 50.00% | 10 | 480 | 3 |" in text
        and "| 1 | 1.0000 | 50.00% | 25.00% | 9 | - | - |" in text
    )
    assert text.index("## Notes") < text.index("## Reproduce")
