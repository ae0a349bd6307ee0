"""A search over --precision fp32,int8 with distillation: both kinds of candidates, INT8 ones scored in
onnxruntime, and the report telling them apart."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest

from autoprune.hardware import CostModel, load_profile
from autoprune.plan import PruningPlan
from autoprune.pruning import generate_space
from autoprune.report.record import build_report
from autoprune.report.study import load_study
from autoprune.report.tables import candidate_table
from autoprune.search import SearchConfig, run_search
from autoprune.search.records import completed_records


@pytest.fixture(scope="module")
def mixed(dense, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8-search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = SearchConfig(
        model="resnet18", target="orin", data="digits", input_shape=dense.shape, seed=dense.seed,
        baseline_epochs=dense.epochs, finetune_steps=3, trials=4, strategy="random", study="int8-mixed",
        out_dir=str(out), precision="fp32,int8", distill=True, distill_alpha=0.5, distill_temperature=2.0,
    )
    result = run_search(config)
    return config, result, load_study(result.study_name, result.storage)[0]


def test_search_yields_fp32_and_int8_candidates(dense, mixed):
    config, result, study = mixed
    assert config.precision == ("fp32", "int8")
    records = completed_records(study)
    assert len(records) == 4 and {r.precision for r in records} == {"fp32", "int8"}
    space = generate_space(dense.model, "resnet18", dense.shape, alignment=load_profile("orin").alignment)
    model = CostModel(load_profile("orin"))
    for trial in study.trials:
        a = trial.user_attrs
        plan = PruningPlan.from_dict(a["plan"])
        assert a["precision"] == plan.precision == trial.params["precision"]
        assert a["latency_ms"] == pytest.approx(model.predict(space, plan).latency_ms)
        if plan.precision == "int8":
            # Accuracy of the quantized ONNX model run in onnxruntime, next to the FP32 accuracy it came from.
            assert 0.0 <= a["accuracy"] <= 1.0 and abs(a["accuracy"] - a["float_accuracy"]) <= 0.1
            assert a["latency_ms"] < model.predict(space, replace(plan, precision="fp32")).latency_ms
        else:
            assert "float_accuracy" not in a


def test_report_marks_precision_on_the_same_front(mixed):
    _, result, study = mixed
    record = build_report(study, result.storage)
    assert {p.precision for p in record.trials} == {"fp32", "int8"}
    header, rows = candidate_table(record)
    column = header.index("precision")
    assert rows[0][column] == "fp32"  # the dense model
    assert [row[column] for row in rows[1:]] == [c.precision for c in record.pareto]
    from autoprune.report.render_html import pareto_figure

    trials = [t for t in pareto_figure(record).data if t.name.startswith("trials:")]
    symbols = {s for t in trials for s in t.marker.symbol}
    assert {"circle", "square"} <= symbols | {"x", "square-x"} and "square" in symbols | {"square-x"}


def test_cli_rejects_unknown_precision_and_int8_on_a_target_without_it(tmp_path, capsys):
    from autoprune.cli import main

    code = main(["search", "--model", "resnet18", "--target", "orin", "--precision", "fp32,in8",
                 "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'int8'" in err and len(err.strip().splitlines()) == 1
    code = main(["search", "--model", "resnet18", "--target", "jetson", "--precision", "int8",
                 "--out", str(tmp_path / "b")])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the "calibrated, not measured" warning
    assert code == 2 and last.startswith("error: ") and "no INT8 path" in last
    assert not (tmp_path / "b" / "study.db").exists()  # refused before any study or training


def test_int8_trial_exports_quantized_onnx_and_a_failed_export_writes_nothing(mixed, tmp_path, monkeypatch):
    import json

    import numpy as np

    import autoprune.quantize
    from autoprune.onnx_export import ort_session
    from autoprune.report.export import ExportSettings, export_trial

    _, result, study = mixed
    trial = next(t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                 if t.user_attrs["precision"] == "int8")
    settings = ExportSettings(finetune_epochs=0, measure=False, record_on_study=False)

    def broken(*args, **kwargs):
        raise RuntimeError("quantizer exploded")

    with monkeypatch.context() as patch:  # a failure after TorchScript and ONNX were built: no file is written
        patch.setattr(autoprune.quantize, "quantize_and_evaluate", broken)
        with pytest.raises(RuntimeError, match="exploded"):
            export_trial(study, trial.number, tmp_path / "broken", settings, storage=result.storage)
    assert not (tmp_path / "broken").exists()

    done = export_trial(study, trial.number, tmp_path / "int8", settings, storage=result.storage)
    card = json.loads(done.files["card_json"].read_text())
    assert card["plan"]["precision"] == "int8" and set(card["files"]) == {"torchscript", "onnx", "onnx_int8"}
    int8 = done.files["onnx_int8"]
    assert card["files"]["onnx_int8"]["bytes"] == int8.stat().st_size
    assert 0.0 <= card["files"]["onnx_int8"]["accuracy"] <= 1.0
    session = ort_session(int8)
    kinds = {node.op_type for node in __import__("onnx").load(str(int8)).graph.node}
    assert "QuantizeLinear" in kinds and "DequantizeLinear" in kinds  # really quantized (QDQ)
    shape = tuple(session.get_inputs()[0].shape)
    logits = session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.float32)})[0]
    assert logits.shape == (1, 10) and np.isfinite(logits).all()
