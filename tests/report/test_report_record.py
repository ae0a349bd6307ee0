"""The report record of a small real study, checked against the study itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from autoprune.cli import main
from autoprune.paths import shipped_dir
from autoprune.plan import kept_channels
from autoprune.report import build_report, measure_trials, per_class_drops, render_md
from autoprune.report.render_html import render_html
from autoprune.report.record import cost_model_info
from autoprune.search.pareto import dominates, hypervolume
from autoprune.search.records import completed_records, pareto_records
from autoprune.search.store import read_study_record


def study_info(study):
    """The study record as plain data, identity fields at the top level (what the assertions compare)."""
    data = read_study_record(study).to_dict()
    return {**data["identity"], **data}


@pytest.fixture(scope="module")
def record(study_run):
    return build_report(study_run.study(), study_run.storage)


def test_trials_and_front_match_the_study(study_run, record):
    study = study_run.study()
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert record.completed_trials == len(complete) == len(record.trials) >= 9
    assert record.failed_trials == sum(t.state == TrialState.FAIL for t in study.trials)
    assert set(record.strategies) == {"random", "uniform"}
    expected_front = [r.number for r in pareto_records(completed_records(study))]
    assert [c.trial for c in record.pareto] == expected_front
    assert {p.trial for p in record.trials if p.pareto_optimal} == set(expected_front)
    # Every feasible trial off the front is dominated by a candidate on it; the front is sorted by latency.
    front_points = [(c.accuracy, c.latency_ms) for c in record.pareto]
    for p in record.trials:
        if not p.pareto_optimal and p.feasible:
            assert any(dominates(q, (p.accuracy, p.latency_ms)) or q == (p.accuracy, p.latency_ms)
                       for q in front_points)
    assert [c.latency_ms for c in record.pareto] == sorted(c.latency_ms for c in record.pareto)


def test_candidate_figures(study_run, record):
    study = study_run.study()
    info = study_info(study)
    dense = info["baseline"]
    assert record.dense.accuracy == dense["accuracy"] and record.dense.latency_ms == dense["latency_ms"]
    assert record.dense.accuracy > 0.5  # a trained baseline, so per-class drops are meaningful
    groups = info["groups"]
    assert record.group_names == tuple(g["name"] for g in groups)
    for c in record.pareto:
        attrs = study.trials[c.trial].user_attrs
        assert c.accuracy == attrs["accuracy"] and c.latency_ms == attrs["latency_ms"]
        assert math.isclose(c.delta_accuracy, attrs["accuracy"] - dense["accuracy"])
        assert math.isclose(c.speedup, dense["latency_ms"] / attrs["latency_ms"])
        assert math.isclose(c.sparsity, 1 - attrs["nonzero_params"] / dense["params"])
        assert 0 < c.sparsity < 1 or c.params == dense["params"]
        ratios = attrs["plan"]["keep_ratios"]
        assert c.keep_ratios == tuple(float(ratios.get(g["name"], 1.0)) for g in groups)
        assert c.kept_channels == tuple(
            kept_channels(g["channels"], ratios.get(g["name"], 1.0), attrs["plan"]["alignment"]) for g in groups)
        assert dict(c.plan) == attrs["plan"]


def test_uniform_curve_and_hypervolume(study_run, record):
    study = study_run.study()
    uniform = sorted((t for t in study.trials if t.state == TrialState.COMPLETE
                      and t.user_attrs["strategy"] == "uniform"), key=lambda t: t.user_attrs["latency_ms"])
    assert [p.trial for p in record.uniform_curve] == [t.number for t in uniform] + [None]
    assert record.uniform_curve[-1].latency_ms == record.dense.latency_ms
    for point, trial in zip(record.uniform_curve, uniform):
        ratios = set(trial.user_attrs["plan"]["keep_ratios"].values()) or {1.0}
        assert point.keep_ratio == pytest.approx(ratios.pop())

    curves = {c.strategy: c for c in record.hypervolume}
    assert set(curves) == {"random", "uniform", "all strategies"}
    assert curves["random"].trials == tuple(p.trial for p in sorted(record.trials, key=lambda p: p.trial)
                                            if p.strategy == "random")
    for curve in curves.values():
        assert all(b >= a - 1e-12 for a, b in zip(curve.values, curve.values[1:])), curve
        assert 0 < curve.final < 1
    ref = record.hypervolume_reference
    feasible = [(p.accuracy, p.latency_ms) for p in record.trials if p.feasible]
    assert curves["all strategies"].final == pytest.approx(hypervolume(feasible, ref) / (ref[1] * (1 - ref[0])))
    assert curves["all strategies"].final >= max(curves["random"].final, curves["uniform"].final) - 1e-12


def test_per_class_flags_follow_the_rule(record):
    threshold = record.class_drop_threshold
    assert threshold == 0.05
    for c in record.pareto:
        assert len(c.per_class) == len(record.class_names) == 10
        for k, dense_acc in zip(c.per_class, record.dense.per_class_accuracy):
            assert k.dense == dense_acc and math.isclose(k.drop, k.dense - k.candidate)
            assert k.flagged == (k.drop > 0 and k.drop - c.average_drop > threshold)


def test_per_class_drops_on_known_numbers():
    rows = per_class_drops([0.9, 0.9, 0.9, 0.5], [0.88, 0.70, 0.92, 0.5], ["a", "b", "c", "d"], 0.04, 0.05)
    assert [r.flagged for r in rows] == [False, True, False, False]
    assert rows[1].excess_drop == pytest.approx(0.16)
    # A class that gained accuracy is never flagged, however far above the average it is.
    assert not per_class_drops([0.5], [0.6], ["x"], -0.3, 0.05)[0].flagged


def test_axis_title_carries_provenance(record):
    assert record.latency_provenance == "calibrated"
    assert "calibrated" in record.latency_axis_title and record.target in record.latency_axis_title
    assert record.target == "jetson-nano-trt-fp16"


def test_cost_model_validation_figures(tmp_path, record):
    # The shipped Jetson profile has no validation yet: the record says so.
    assert record.cost_model.validation is None and "no validation" in record.cost_model.note
    data = yaml.safe_load((shipped_dir("hardware_profiles") / "jetson-nano-trt-fp16.yaml").read_text())
    data["name"] = "jetson-validated"
    data["validation"] = {"resnet18@1x3x16x16": {"samples": 12, "mape_pct": 7.5, "within_5_pct": 41.7,
                                                 "within_10_pct": 83.3, "kendall_tau": 0.91, "date": "2026-01-01"}}
    path = tmp_path / "jetson-validated.yaml"
    path.write_text(yaml.safe_dump(data))
    info = cost_model_info(str(path), "resnet18", [1, 3, 16, 16])
    assert info.validation["mape_pct"] == 7.5 and info.validation["kendall_tau"] == 0.91
    assert "MAPE 7.5%" in info.validation_summary and info.note == ""


def test_json_and_markdown_carry_the_record(study_run, record, tmp_path):
    data = json.loads(json.dumps(record.to_dict(), allow_nan=False))
    assert [c["trial"] for c in data["pareto"]] == [c.trial for c in record.pareto]
    assert data["pareto"][0]["flagged_classes"] == list(record.pareto[0].flagged_classes)
    assert data["config"]["model"] == "resnet18"

    out = tmp_path / "r.json"
    assert main(["report", "--study", study_run.name, "--storage", study_run.storage, "--format", "json",
                 "--out", str(out)]) == 0
    from_cli = json.loads(out.read_text())
    assert from_cli["pareto"] == data["pareto"] and from_cli["completed_trials"] == record.completed_trials

    md = render_md(record)
    for c in record.pareto:
        assert f"| {c.trial} | {c.strategy} | {c.accuracy * 100:.1f}% |" in md
    assert "## Cost model" in md and "## Run configuration" in md
    # The validation split's noise, from the size the search recorded.
    n, noise = record.dense.val_size, record.dense.accuracy_noise_points
    assert n > 0 and noise == pytest.approx(196 * (record.dense.accuracy * (1 - record.dense.accuracy) / n) ** 0.5)
    assert f"measured on {n:,} validation images: ±{noise:.1f} points" in md
    assert f"measured on {n:,} validation images: ±{noise:.1f} points" in render_html(record)


def test_host_measurements_reach_the_record(study_run, record):
    study = study_run.study()
    fronts = [c.trial for c in record.pareto][:2]
    measured = measure_trials(study, fronts, warmup=2, repeats=10)
    again = build_report(study_run.study(), study_run.storage)
    assert set(fronts) <= set(again.host_measured_trials)
    assert again.dense.host_latency == measured[None]
    for c in again.pareto:
        if c.trial in fronts:
            assert c.host_latency == measured[c.trial] and c.host_latency.provenance.startswith("measured")
            assert c.host_speedup == pytest.approx(measured[None].mean_ms / measured[c.trial].mean_ms)


def test_missing_study_says_how_to_pass_storage(tmp_path, monkeypatch, capsys, study_run):
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--study", "nope"]) == 2
    err = capsys.readouterr().err
    assert "autoprune-runs/nope/study.db" in err and "--storage" in err and len(err.strip().splitlines()) == 1
    assert main(["report", "--study", study_run.name[:-1], "--storage", study_run.storage]) == 2
    assert f"did you mean '{study_run.name}'" in capsys.readouterr().err
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["select", "--study", "x", "--storage", missing, "--knee"]) == 2
    assert "no database file" in capsys.readouterr().err and not Path(tmp_path / "none.db").exists()


def test_report_cli_measures_on_the_host(study_run, capsys):
    args = ["report", "--study", study_run.name, "--storage", study_run.storage, "--format", "md", "--out", "-"]
    assert main([*args, "--measure", "--repeats", "5"]) == 0
    md = capsys.readouterr().out
    record = build_report(study_run.study(), study_run.storage)
    assert set(record.host_measured_trials) >= {c.trial for c in record.pareto}
    for c in record.pareto:
        assert c.host_latency is not None and c.host_latency.mean_ms > 0
        assert f"| {c.trial} | {c.strategy} |" in md
        assert f"{c.host_latency.mean_ms:.4g} ± " in md
