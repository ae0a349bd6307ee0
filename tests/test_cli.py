"""The CLI end to end: a real tiny search, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
import time

import optuna
import pytest
import torch

from autoprune.cli import main
from autoprune.search.pareto import dominates

TINY = ["--data", "digits", "--input-shape", "1x3x32x32", "--baseline-epochs", "1", "--finetune-steps", "3"]


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
    """One real search (ResNet-18, 4 TPE trials, Jetson Nano profile) shared by the tests below."""
    out = tmp_path_factory.mktemp("search")
    code = main(["search", "--model", "resnet18", "--target", "jetson", *TINY, "--trials", "4", "--out", str(out),
                 "--json"])
    assert code == 0
    return out, json.loads((out / "results.json").read_text())


def test_search_yields_real_non_dominated_front(tiny_search):
    out, result = tiny_search
    storage = result["storage"]
    study = optuna.load_study(study_name=result["study"], storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    front = result["pareto"]
    assert front, "a search must report at least one Pareto-optimal candidate"
    points = [(t.user_attrs["accuracy"], t.user_attrs["latency_ms"]) for t in complete]
    for candidate in front:
        p = (candidate["accuracy"], candidate["latency_ms"])
        assert not any(dominates(q, p) for q in points)
        assert candidate["latency_provenance"] == "calibrated"
    dense = result["baseline"]
    # Pruned candidates are really smaller and predicted faster than the dense model.
    assert all(c["params"] < dense["params"] for c in front)
    assert all(c["latency_ms"] < dense["latency_ms"] for c in front)
    assert all(c["speedup"] > 1.0 for c in front)
    assert result["config"]["model"] == "resnet18"


def test_tp_global_runs_through_the_cli_on_the_trained_baseline(tiny_search, capsys, tmp_path):
    code, stdout, err = run_cli(capsys, "search", "--model", "resnet18", "--target", "jetson", *TINY, "--trials",
                                "2", "--strategy", "tp-global", "--out", str(tmp_path), "--json")
    assert code == 0, err
    result = json.loads(stdout)
    study = optuna.load_study(study_name=result["study"], storage=result["storage"])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.user_attrs["tp_global_ratio"] for t in done] == [0.375, 0.75]
    assert all(t.user_attrs["strategy"] == "tp-global" for t in done)
    assert done[1].values[1] < done[0].values[1] < result["baseline"]["latency_ms"]


def test_json_output_matches_results_file(tiny_search, capsys):
    out, result = tiny_search
    # Same command again: the study is complete, so nothing is re-run and the same front is printed.
    code, stdout, _ = run_cli(capsys, "search", "--model", "resnet18", "--target", "jetson", *TINY, "--trials", "4",
                              "--out", str(out), "--json")
    assert code == 0
    again = json.loads(stdout)
    assert [c["number"] for c in again["pareto"]] == [c["number"] for c in result["pareto"]]
    assert again["completed_trials"] == 4


def test_table_output_lists_front_and_files(tiny_search, capsys):
    out, result = tiny_search
    code, stdout, _ = run_cli(capsys, "search", "--model", "resnet18", "--target", "jetson", *TINY, "--trials", "4",
                              "--out", str(out))
    assert code == 0
    assert "Pareto-optimal candidates" in stdout
    assert "dense" in stdout and "calibrated" in stdout
    assert "results.json" in stdout
    # How far apart two candidates must be before the validation split tells them apart (95 % binomial).
    n, p = result["baseline"]["val_size"], result["baseline"]["accuracy"]
    assert 0 < n < 1797  # a split of the digits data set
    assert f"measured on {n:,} validation images: ±{196 * (p * (1 - p) / n) ** 0.5:.1f} points" in stdout


def test_study_with_other_model_is_refused(tiny_search, capsys):
    out, _ = tiny_search
    code, _, err = run_cli(capsys, "search", "--model", "mobilenet_v2", "--target", "jetson", *TINY, "--trials", "1",
                           "--out", str(out), "--study", "resnet18-jetson-digits")
    assert code == 2
    assert "new --study" in err.strip().splitlines()[-1]
    assert err.count("error:") == 1


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--model", "resnet81", "--target", "jetson"], "did you mean 'resnet18'"),
        (["--model", "resnet18", "--target", "jetsn"], "jetson"),
        (["--model", "resnet18", "--target", "jetson", "--input-shape", "1x3x32"], "malformed"),
        (["--model", "resnet18", "--target", "jetson", "--input-shape", "axbxcxd"], "malformed"),
        (["--model", "resnet18", "--target", "jetson", "--trials", "0"], "--trials must be at least 1"),
        (["--model", "resnet18", "--target", "jetson", "--trials", "-3"], "--trials must be at least 1"),
        (["--model", "resnet18", "--target", "jetson", "--finetune-steps", "-1"], "--finetune-steps"),
        (["--model", "resnet18", "--target", "jetson", "--data", "mnist"], "did you mean 'mnist5k'"),
        (["--model", "resnet18", "--target", "jetson", "--checkpoint", "/no/such.pt", "--data", "digits"],
         "does not exist"),
        (["--model", "resnet18", "--target", "jetson", "--storage", "notadb://x"], "cannot open study storage"),
        (["--model", "resnet18", "--target", "jetson", "--strategy", "tpee"], "did you mean 'tpe'"),
        (["--model", "resnet18", "--target", "jetson", "--importance", "snipp"], "did you mean 'snip'"),
        (["--model", "resnet18"], "Missing option '--target'"),
        (["--model", "resnet18", "--target", "jetson", "--trial-timeout", "0"], "--trial-timeout must be a positive"),
        (["--model", "resnet18", "--target", "jetson", "--trial-timeout", "-5"], "--trial-timeout must be a positive"),
        (["--model", "resnet18", "--target", "jetson", "--trial-timeout", "nan"], "--trial-timeout must be a positive"),
        (["--model", "resnet18", "--target", "jetson", "--heartbeat-interval", "0"], "--heartbeat-interval"),
        (["--model", "resnet18", "--target", "jetson", "--worker-retries", "-1"], "--worker-retries must be 0"),
        (["--model", "resnet18", "--target", "jetson", "--workers", "2"], "need --backend ray"),
        (["--model", "resnet18", "--target", "jetson", "--backend", "ray", "--cpus-per-trial", "0"],
         "--cpus-per-trial must be positive"),
        (["--model", "resnet18", "--target", "jetson", "--precision", "int9"], "unknown precision 'int9'"),
        (["--model", "resnet18", "--target", "jetson", "--max-params", "0"], "--max-params must be a positive"),
        (["--model", "resnet18", "--target", "jetson", "--min-accuracy", "1.5"], "--min-accuracy is a fraction"),
        (["--model", "resnet18", "--target", "jetson", "--distill-alpha", "2"], "distill"),
        (["--model", "resnet18", "--target", "jetson", *TINY, "--space", "/no/such.yaml"], "does not exist"),
        (["--model", "resnet18", "--target", "jetson", *TINY, "--max-latency-ms", "0.0001"],
         "below the fastest plan"),
        (["--model", "resnet18", "--target", "jetson", *TINY, "--storage", "postgresql://u:Pw-x1y2z3@127.0.0.1:1/db"],
         "cannot open study storage 'postgresql://u:***@127.0.0.1:1/db'"),
        (["--model", "resnet18", "--target", "jetson", *TINY, "--storage", "postgresql://u:***@127.0.0.1:1/db"],
         "masked"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, fragment, capsys, tmp_path):
    started = time.perf_counter()
    code, out, err = run_cli(capsys, "search", *args, "--out", str(tmp_path / "run"))
    assert code == 2, err
    assert time.perf_counter() - started < 60  # refused before any training
    # Warnings (e.g. "this profile is calibrated, not measured") may precede it; the error is one last line.
    assert fragment in err.strip().splitlines()[-1]
    assert err.count("error:") == 1
    assert "Traceback" not in err and "Pw-x1y2z3" not in err + out
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_a_refused_run_keeps_the_previous_config(tiny_search, capsys):
    out, _ = tiny_search
    before = (out / "config.json").read_text()
    code, _, err = run_cli(capsys, "search", "--model", "resnet18", "--target", "jetson", *TINY, "--trials", "4",
                           "--seed", "7", "--out", str(out))
    assert code == 2 and "holds trials for seed=0, not 7" in err.strip().splitlines()[-1]
    assert (out / "config.json").read_text() == before
    config = json.loads(before)
    assert config["trial_timeout"] is None and config["heartbeat_interval"] == 10


def test_debug_variable_shows_traceback(monkeypatch):
    from autoprune.errors import UserError

    monkeypatch.setenv("AUTOPRUNE_DEBUG", "1")
    with pytest.raises(UserError):
        main(["search", "--model", "resnet81", "--target", "jetson"])


def test_models_command_lists_torchvision_models(capsys):
    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    records = {r["name"]: r for r in json.loads(out)}
    assert "resnet18" in records and "vit_b_16" in records
    assert records["vit_b_16"]["heads"] and records["vit_b_16"]["min_input"] == 224
    assert not records["swin_t"]["heads"] and "kept whole" in records["swin_t"]["note"]
    code, out, _ = run_cli(capsys, "models")
    assert code == 0
    row = next(line.split() for line in out.splitlines() if line.startswith("vit_b_16 "))
    assert row[:6] == ["vit_b_16", "yes", "yes", "yes", "yes", "224"]  # width, heads, N:M, depth, min input


def test_checkpoint_is_used_instead_of_training(tmp_path, capsys):
    from autoprune.models import create_model

    model = create_model("resnet18", 10)
    torch.save(model.state_dict(), tmp_path / "dense.pt")
    code, stdout, err = run_cli(
        capsys, "search", "--model", "resnet18", "--target", "jetson", *TINY, "--trials", "1",
        "--checkpoint", str(tmp_path / "dense.pt"), "--out", str(tmp_path / "run"), "--json",
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["baseline"]["source"].startswith("checkpoint")


def test_front_table_with_int8_candidates_fits_80_columns():
    from rich.console import Console

    from autoprune.cli.search import pareto_table
    from autoprune.search import SearchResult, TrialRecord
    from autoprune.search.store import DenseBaseline, ModelFigures

    rec = TrialRecord(number=3, strategy="nsga2", accuracy=0.95, latency_ms=0.2, latency_provenance="measured",
                      params=1_000_000, macs=1, mflops=2.0, size_mb=1.0, speedup=2.0, plan={}, feasible=True,
                      proxy_accuracy=0.9, fidelity="finetuned", finetune_steps=5, precision="int8")
    dense = DenseBaseline(0.97, (), (), 0.4, "measured", "", "trained", ModelFigures(11_000_000, 11_000_000, 1, 74.2, 44.0))
    console = Console(width=80, record=True)
    console.print(pareto_table(SearchResult("s", "sqlite:///x", ".", dense, [rec], 1, 0)))
    text = console.export_text()
    assert "…" not in text
    assert all(word in text for word in ("precision", "strategy", "baseline", "nsga2", "int8", "fp32"))
