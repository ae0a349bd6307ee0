"""`autoprune space` / `autoprune prune`, the shipped reviewed spaces, and the pruning schedules."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import yaml

from autoprune.cli import main
from autoprune.data import load_data
from autoprune.errors import UserError
from autoprune.models import create_model
from autoprune.onnx_export import ort_predict, ort_session
from autoprune.paths import shipped_dir
from autoprune.plan import PruningPlan
from autoprune.pruning import generate_space
from autoprune.pruning.schedules import agp_sparsity, run_schedule
from autoprune.pruning.unstructured import prunable_layers

SHAPE = (1, 3, 32, 32)


def test_space_command_writes_yaml(tmp_path, capsys):
    assert main(["space", "--model", "resnet18", "--alignment", "8", "--out", str(tmp_path / "s.yaml")]) == 0
    data = yaml.safe_load((tmp_path / "s.yaml").read_text())
    assert data["alignment"] == 8 and len(data["groups"]) == 12
    assert {"name": "layer1.0.conv1", "channels": 64}.items() <= data["groups"][1].items()


def test_prune_command_writes_model_onnx_and_metrics(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["prune", "--model", "resnet18", "--ratio", "0.5", "--out", str(out), "--json"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)
    assert json.loads((out / "metrics.json").read_text())["params"] == metrics["params"]
    dense = sum(p.numel() for p in create_model("resnet18", 10).parameters())
    assert 0.2 * dense < metrics["params"] < 0.3 * dense  # half the channels: about a quarter of the weights
    model = torch.load(out / "model.pt", weights_only=False).eval()
    onnx.checker.check_model(onnx.load(out / "model.onnx"))
    x = torch.randn(2, *SHAPE[1:])
    np.testing.assert_allclose(ort_predict(ort_session(out / "model.onnx"), x.numpy()),
                               model(x).detach().numpy(), rtol=1e-3, atol=1e-5)


def test_prune_command_with_sparse_plan_reports_exact_sparsity(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    plan.write_text("layer_sparsity: {layer1.0.conv1: 0.5}\nnm: {layer2.0.conv2: '2:4'}\n")
    assert main(["prune", "--model", "resnet18", "--plan", str(plan), "--out", str(tmp_path / "o"), "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["achieved_sparsity"]["layers"]
    assert layers["layer1.0.conv1"]["zeros"] == 64 * 64 * 9 // 2
    assert layers["layer2.0.conv2"]["sparsity"] == 0.5 and layers["layer2.0.conv2"]["nm"] == "2:4"


@pytest.mark.parametrize("argv, needle", [
    (["prune", "--model", "resnet18", "--ratio", "1.2"], "outside [0, 1)"),
    (["prune", "--model", "resnet18"], "exactly one of"),
    (["prune", "--model", "resnet18", "--ratio", "0.5", "--importance", "snip"], "needs calibration"),
    (["prune", "--model", "resnet18", "--ratio", "0.5", "--schedule", "agb"], "did you mean 'agp'"),
])
def test_prune_command_bad_input_exits_2(tmp_path, capsys, argv, needle):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "vit_b_16"])
def test_shipped_spaces_fit_their_models(name):
    path = shipped_dir("search_spaces") / f"{name}.yaml"
    model = create_model(name, 10)
    space = generate_space(model, name, (1, 3, 224, 224) if name == "vit_b_16" else SHAPE).with_overrides(path)
    assert space.alignment == 8
    assert all(0 < g.min_keep <= g.max_keep <= 1 for g in space.groups)
    assert min(g.min_keep for g in space.groups) == 0.25


def test_space_file_naming_a_missing_layer_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: resnet18\ngroups:\n- name: layer1.0.conv1\n  layers: [layer1.0.conv7]\n")
    space = generate_space(create_model("resnet18", 10), "resnet18", SHAPE)
    with pytest.raises(UserError, match=r"groups\[0\]: layer 'layer1.0.conv7'"):
        space.with_overrides(path)
    path.write_text("model: resnet18\ngroups:\n- name: layer1.0.conv1\n  min_keep: 0.0\n")
    with pytest.raises(UserError, match="keep range"):
        space.with_overrides(path)


def test_agp_schedule_is_cubic():
    values = [agp_sparsity(t, 10, 0.8) for t in range(11)]
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[5] == pytest.approx(0.8 * (1 - 0.5**3))


@pytest.mark.parametrize("schedule", ["one-shot", "iterative", "agp"])
def test_schedules_reach_their_target(schedule):
    torch.manual_seed(0)
    model = create_model("resnet18", 10).eval()
    # 16x16 (digits are 8x8): channel and weight counts do not depend on the resolution, the cost does
    loader = load_data("digits", (16, 16), 0).loader("train", 8, 0)
    plan = PruningPlan(keep_ratios={"layer1.0.conv1": 0.5}, global_sparsity=0.6)
    result = run_schedule(model, plan, schedule, torch.zeros(1, 3, 16, 16), loader, steps=6, rounds=3)
    assert model.layer1[0].conv1.out_channels == 32
    layers = prunable_layers(model)
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeros == round(0.6 * total)  # exactly the target after fine-tuning, masks held
    assert result.sparsity.layer("layer1.0.conv1").numel == 32 * 64 * 9


def test_prune_device_flag_is_validated_in_one_line(tmp_path, capsys):
    code = main(["prune", "--model", "resnet18", "--ratio", "0.5", "--out", str(tmp_path / "o"), "--device", "tpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "auto|cpu|cuda|cuda:N" in err and "Traceback" not in err
    if not torch.cuda.is_available():
        assert main(["prune", "--model", "resnet18", "--ratio", "0.5", "--out", str(tmp_path / "o"),
                     "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_agp_on_cuda_ends_on_the_cpu_at_the_plan_sparsity():
    torch.manual_seed(0)
    model = create_model("resnet18", 10)
    loader = load_data("digits", (16, 16), 0).loader("train", 8, 0, device="cuda")
    plan = PruningPlan(global_sparsity=0.5)
    result = run_schedule(model, plan, "agp", torch.zeros(1, 3, 16, 16), loader, steps=6, rounds=3, device="cuda")
    assert next(model.parameters()).device.type == "cpu"
    assert result.sparsity.to_dict()  # computed on the CPU model
    layers = prunable_layers(model)
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    assert zeros >= 0.49 * sum(m.weight.numel() for m in layers.values())
