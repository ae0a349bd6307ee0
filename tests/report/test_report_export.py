"""Export round trip: rebuild + fine-tune a real trial, then check the files against the card and each other."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from autoprune.cli import main
from autoprune.data import load_data
from autoprune.errors import UserError
from autoprune.plan import kept_channels
from autoprune.report import ExportSettings, distillation_loss, export_trial, read_host_latencies
from autoprune.search.records import completed_records, pareto_records
from autoprune.search.store import read_study_record


def study_info(study):
    """The study record as plain data, identity fields at the top level (what the assertions compare)."""
    data = read_study_record(study).to_dict()
    return {**data["identity"], **data}

# Runs in a fresh interpreter that never imports autoprune: the .pt file must load with PyTorch alone.
LOAD_WITHOUT_AUTOPRUNE = """
import sys, torch
model = torch.jit.load(sys.argv[1]).eval()
images = torch.load(sys.argv[2])
with torch.no_grad():
    logits = torch.cat([model(images[i:i + 1]) for i in range(len(images))])
torch.save(logits, sys.argv[3])
assert not any(name.split(".")[0] == "autoprune" for name in sys.modules), "autoprune was imported"
print(sum(p.numel() for p in model.parameters()))
"""


@pytest.fixture(scope="module")
def exported(study_run, tmp_path_factory):
    study = study_run.study()
    front = pareto_records(completed_records(study))
    trial = min(front, key=lambda r: r.params)  # the most pruned Pareto-optimal candidate
    out = tmp_path_factory.mktemp("export")
    code = main(["export", "--study", study_run.name, "--storage", study_run.storage, "--trial", str(trial.number),
                 "--out", str(out), "--finetune-epochs", "1", "--distill", "--repeats", "20"])
    assert code == 0
    return trial, out, json.loads((out / "model_card.json").read_text())


def _val(study_run):
    info = study_info(study_run.study())
    data = load_data(info["data"], tuple(info["input_shape"][2:]), info["baseline_spec"]["seed"])
    images, labels = zip(*data.loader("val", 256, 0, shuffle=False))
    return torch.cat(images), torch.cat(labels), info


def test_files_agree_with_the_card(study_run, exported, tmp_path):
    trial, out, card = exported
    images, labels, info = _val(study_run)
    torch.save(images, tmp_path / "images.pt")

    # TorchScript, loaded by a process without autoprune: same accuracy as the card, same parameter count.
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_AUTOPRUNE, str(out / "model.pt"),
                           str(tmp_path / "images.pt"), str(tmp_path / "logits.pt")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == card["params"]
    logits = torch.load(tmp_path / "logits.pt")
    correct = int((logits.argmax(1) == labels).sum())
    assert correct / len(labels) == pytest.approx(card["accuracy"], abs=1.01 / len(labels))
    per_class = [float((logits.argmax(1)[labels == k] == k).float().mean()) for k in range(10)]
    assert per_class == pytest.approx(card["per_class_accuracy"], abs=1.01 / min(int((labels == k).sum())
                                                                                  for k in range(10)))

    # ONNX in onnxruntime (batch of one, as exported): the same predictions as the PyTorch model.
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    onnx_logits = np.concatenate([session.run(None, {name: images[i:i + 1].numpy()})[0] for i in range(len(images))])
    assert np.abs(onnx_logits - logits.numpy()).max() < 1e-3
    agree = float(np.mean(onnx_logits.argmax(1) == logits.numpy().argmax(1)))
    assert agree >= 1 - 1.01 / len(labels)
    assert card["onnx_check"]["top1_agreement"] >= 1 - 1.01 / card["onnx_check"]["samples"]
    assert card["onnx_check"]["max_abs_diff"] < 1e-3
    assert float(np.mean(onnx_logits.argmax(1) == labels.numpy())) == pytest.approx(card["accuracy"],
                                                                                    abs=1.01 / len(labels))

    # The rebuilt architecture is the trial's plan: the stem keeps exactly the planned channels.
    onnx_model = __import__("onnx").load(str(out / "model.onnx"))
    first_conv = next(n for n in onnx_model.graph.node if n.op_type == "Conv")
    stem = next(i for i in onnx_model.graph.initializer if i.name == first_conv.input[1])
    plan = trial.plan
    assert stem.dims[0] == kept_channels(64, plan["keep_ratios"].get("conv1", 1.0), plan["alignment"])


def test_card_fields(study_run, exported):
    trial, out, card = exported
    study = study_run.study()
    attrs = study.trials[trial.number].user_attrs
    info = study_info(study)
    assert card["trial"] == trial.number and card["plan"] == attrs["plan"]
    assert card["predicted_latency"]["latency_ms"] == attrs["latency_ms"]
    assert card["predicted_latency"]["provenance"] == attrs["latency_provenance"] == "calibrated"
    assert card["predicted_latency"]["target"] == info["target"]
    assert card["predicted_latency"]["speedup"] == pytest.approx(info["baseline"]["latency_ms"] / attrs["latency_ms"])
    host = card["host_latency"]
    assert host["mean_ms"] > 0 and host["n"] > 0 and host["provenance"].startswith("measured: onnxruntime")
    assert card["host_speedup"] == pytest.approx(card["dense_host_latency"]["mean_ms"] / host["mean_ms"])
    assert read_host_latencies(study)[trial.number].to_dict() == host
    assert card["params"] < info["baseline"]["params"] and card["mflops"] < info["baseline"]["mflops"]
    assert card["sparsity"] == pytest.approx(1 - card["nonzero_params"] / info["baseline"]["params"])
    assert card["finetune"]["distill"] and card["finetune"]["epochs"] == 1 and card["finetune"]["steps"] > 0
    assert card["command"].startswith("autoprune export --study") and "--distill" in card["command"]
    assert f"--trial {trial.number}" in card["command"]
    for role, entry in card["files"].items():
        assert (out / entry["path"].split("/")[-1]).stat().st_size == entry["bytes"] > 0, role
    md = (out / "model_card.md").read_text()
    assert card["reproduce"] in md and f"{card['accuracy'] * 100:.2f}%" in md and "calibrated" in md


def test_distillation_loss():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10), torch.randn(8, 10)
    labels = torch.randint(0, 10, (8,))
    ce = torch.nn.functional.cross_entropy(student, labels)
    assert torch.isclose(distillation_loss(student, teacher, labels, 4.0, 0.0), ce)
    assert float(distillation_loss(teacher, teacher, labels, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    kd = float(distillation_loss(student, teacher, labels, 2.0, 1.0))
    manual = float((torch.softmax(teacher / 2, 1) * (torch.log_softmax(teacher / 2, 1)
                                                     - torch.log_softmax(student / 2, 1))).sum(1).mean()) * 4
    assert kd == pytest.approx(manual, rel=1e-5) and kd > 0


def test_export_rejects_bad_input(study_run, tmp_path):
    with pytest.raises(UserError, match="--distill-weight"):
        ExportSettings(distill_weight=1.5)
    with pytest.raises(UserError, match="--finetune-epochs"):
        ExportSettings(finetune_epochs=-1)
    with pytest.raises(UserError, match="trial 999 .* not a completed trial; completed trials: 0, 1"):
        export_trial(study_run.study(), 999, tmp_path, ExportSettings(finetune_epochs=0, measure=False))


def test_export_refuses_an_unusable_out_before_any_work(study_run, tmp_path, capsys):
    import time

    (tmp_path / "a-file").write_text("x")
    started = time.perf_counter()
    code = main(["export", "--study", study_run.name, "--storage", study_run.storage, "--trial", "0",
                 "--out", str(tmp_path / "a-file")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and "is a file" in err
    assert time.perf_counter() - started < 15  # no data loaded, nothing fine-tuned
