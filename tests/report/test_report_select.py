"""Selection rules on a known front, and `autoprune select` on a real study."""

from __future__ import annotations

import json

import pytest

from autoprune.cli import main
from autoprune.errors import UserError
from autoprune.report import knee_index, parse_accuracy, select_trial
from autoprune.search.records import TrialRecord, completed_records, pareto_records


def rec(number: int, accuracy: float, latency_ms: float) -> TrialRecord:
    return TrialRecord(number=number, strategy="test", accuracy=accuracy, latency_ms=latency_ms,
                       latency_provenance="measured", params=1000 * number, macs=1, mflops=1.0, size_mb=1.0,
                       speedup=8.0 / latency_ms, plan={})


# Front: 0 (0.70, 1 ms), 1 (0.80, 2 ms), 2 (0.90, 4 ms), 3 (0.92, 8 ms); trial 4 (0.75, 3 ms) is dominated by 1.
KNOWN = [rec(0, 0.70, 1.0), rec(1, 0.80, 2.0), rec(2, 0.90, 4.0), rec(3, 0.92, 8.0), rec(4, 0.75, 3.0)]


def test_best_accuracy_under_a_latency_budget():
    assert select_trial(KNOWN, max_latency_ms=3.5).record.number == 1  # trial 4 fits too but is dominated
    assert select_trial(KNOWN, max_latency_ms=4.0).record.number == 2  # the budget is inclusive
    assert select_trial(KNOWN, max_latency_ms=100).record.number == 3
    with pytest.raises(UserError, match=r"fastest is trial 0 at 1 ms.*at least 1"):
        select_trial(KNOWN, max_latency_ms=0.5)


def test_lowest_latency_above_an_accuracy_floor():
    assert select_trial(KNOWN, min_accuracy=0.85).record.number == 2
    assert select_trial(KNOWN, min_accuracy=0.80).record.number == 1  # the floor is inclusive
    assert select_trial(KNOWN, min_accuracy=parse_accuracy("91%")).record.number == 3
    with pytest.raises(UserError, match=r"most accurate is trial 3 at 92.00%"):
        select_trial(KNOWN, min_accuracy=0.95)
    for bad in ("1.5", "-0.1", "abc", "150%"):
        with pytest.raises(UserError, match="0.92, or 92%"):
            parse_accuracy(bad)


def test_knee_of_the_front():
    # Normalised over the front, latency (1, 2, 4, 8) ms -> (0, 1/7, 3/7, 1) and accuracy -> (0, 5/11, 10/11, 1):
    # the height above the chord, accuracy - latency, is largest for trial 2 (10/11 - 3/7).
    assert select_trial(KNOWN, knee=True).record.number == 2
    # An L-shaped front: the corner is the knee whichever scale the objectives have.
    corner = [rec(0, 0.50, 1.0), rec(1, 0.89, 1.1), rec(2, 0.90, 10.0)]
    assert knee_index(corner) == 1
    # A point below the chord (a convex front) is never the knee.
    assert select_trial([rec(0, 0.1, 1.0), rec(1, 0.11, 100.0), rec(2, 0.99, 101.0)], knee=True).record.number != 1
    # Two points have no knee: the tie goes to the more accurate one.
    assert select_trial([rec(0, 0.7, 1.0), rec(1, 0.9, 2.0)], knee=True).record.number == 1


def test_trial_by_number_and_rule_errors():
    chosen = select_trial(KNOWN, trial=4)
    assert not chosen.pareto_optimal and chosen.dominated_by == (1,)
    assert select_trial(KNOWN, trial=2).pareto_optimal
    with pytest.raises(UserError, match="completed trials: 0, 1, 2, 3, 4"):
        select_trial(KNOWN, trial=9)
    with pytest.raises(UserError, match="exactly one rule"):
        select_trial(KNOWN)
    with pytest.raises(UserError, match="exactly one rule.*--max-latency-ms, --knee"):
        select_trial(KNOWN, max_latency_ms=2.0, knee=True)
    with pytest.raises(UserError, match="no completed trials"):
        select_trial([], knee=True)


def test_select_cli_on_a_real_study(study_run, capsys):
    front = pareto_records(completed_records(study_run.study()))
    args = ["select", "--study", study_run.name, "--storage", study_run.storage, "--json"]

    assert main([*args, "--knee"]) == 0
    knee = json.loads(capsys.readouterr().out)
    assert knee["pareto_optimal"] and knee["trial"] in {r.number for r in front}

    slowest = max(front, key=lambda r: r.latency_ms)
    assert main([*args, "--max-latency-ms", str(slowest.latency_ms)]) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == max(front, key=lambda r: r.accuracy).number

    floor = min(r.accuracy for r in front)
    assert main([*args, "--min-accuracy", repr(floor)]) == 0
    assert json.loads(capsys.readouterr().out)["trial"] == min(front, key=lambda r: r.latency_ms).number

    fastest = min(r.latency_ms for r in front)
    assert main([*args, "--max-latency-ms", str(fastest / 2)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no Pareto-optimal trial runs within") and "--max-latency-ms" in err
    assert len(err.strip().splitlines()) == 1


def test_a_study_whose_name_needed_slugging_is_found_at_its_default_place(study_run, tmp_path, monkeypatch, capsys):
    import optuna

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "autoprune-runs" / "my-study" / "study.db"  # where `search --study "my study"` puts it
    db.parent.mkdir(parents=True)
    optuna.copy_study(from_study_name=study_run.name, from_storage=study_run.storage, to_storage=f"sqlite:///{db}",
                      to_study_name="my study")
    assert main(["select", "--study", "my study", "--knee", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["storage"] == f"sqlite:///{db.resolve()}"
    assert main(["report", "--study", "my study", "--format", "md"]) == 0
    assert (db.parent / "report.md").is_file()
