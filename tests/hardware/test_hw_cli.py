"""The hardware commands: targets, latency, profile export/run/import/validate, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autoprune.cli import main
from autoprune.hardware import load_profile


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_targets_lists_provenance(capsys):
    code, out, _ = _run(capsys, "targets", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["jetson-nano-trt-fp16"]["provenance"] == "calibrated"
    assert "jetson" in rows["jetson-nano-trt-fp16"]["aliases"]
    assert rows["jetson-agx-orin-trt-fp16"]["provenance"] == "estimated"


def test_latency_json_breakdown_sums_to_total(capsys):
    code, out, _ = _run(capsys, "latency", "--model", "resnet18", "--target", "jetson", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["provenance"] == "calibrated" and data["target"] == "jetson-nano-trt-fp16"
    assert sum(r["ms"] for r in data["per_layer"]) == pytest.approx(data["latency_ms"], abs=1e-4)
    assert data["size_mb"] > 0 and data["macs"] > 0


def test_latency_of_a_plan_file_is_lower(capsys, tmp_path, resnet_space):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"keep_ratios": {g: 0.5 for g in resnet_space.group_names}, "alignment": 8}))
    # At 224x224 compute dominates on a Nano (at 32x32 its ~70 us per kernel does, and halving channels gains less).
    size = ("--input-shape", "1x3x224x224", "--num-classes", "10")
    _, dense, _ = _run(capsys, "latency", "--model", "resnet18", "--target", "jetson", *size, "--json")
    code, pruned, _ = _run(capsys, "latency", "--model", "resnet18", "--target", "jetson", "--plan", str(plan),
                           *size, "--json")
    assert code == 0 and json.loads(pruned)["latency_ms"] < 0.5 * json.loads(dense)["latency_ms"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("latency", "--model", "resnet18", "--target", "jetsn"), "did you mean 'jetson'"),
        (("profile", "validate", "--target", "jetson", "--model", "resnet18", "--samples", "3"),
         "can only validate onnxruntime"),
        (("profile", "validate", "--target", "cpu", "--model", "resnet18", "--rounds", "0"),
         "--rounds must be at least 1"),
        (("profile", "run", "/nonexistent-bundle"), "has no manifest.json"),
        (("profile", "calibrate", "--target", "jetson", "--model", "resnet18"), "is not this machine"),
        (("profile", "calibrate", "--model", "resnet18", "--plans", "2"), "--plans must be at least 3"),
        (("profile", "calibrate", "--model", "resnet18", "--budget", "0"), "--budget must be a positive"),
        (("latency", "--model", "resnet18", "--input-shape", "1x3x32"), "--input-shape '1x3x32' is malformed"),
        (("profile", "measure", "--model", "resnet18", "--out", "/nonexistent/p.yaml", "--precision", "int8"),
         "measure the FP32 table first"),
        (("profile", "measure", "--model", "resnet18", "--out", "/nonexistent/p.yaml", "--precision", "fp16"),
         "unknown precision"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1


def test_export_run_without_torch_then_import(capsys, tmp_path):
    bundle = tmp_path / "bundle"
    code, _, _ = _run(capsys, "profile", "export", "--model", "resnet18", "--out", str(bundle), "--precision", "fp32",
                      "--alignment", "16", "--max-points", "2", "--calibration-points", "2")
    assert code == 0 and (bundle / "run_profile.py").is_file()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert len(manifest["models"]) == 2 and all((bundle / e["file"]).is_file() for e in manifest["entries"])
    # The device side must run with torch absent: block its import and run the copied script.
    script = ("import sys, runpy; sys.modules['torch'] = None; "
              f"sys.argv = ['run_profile.py', {str(bundle)!r}]; runpy.run_path({str(bundle / 'run_profile.py')!r}, "
              "run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((bundle / "results.json").read_text())
    assert len(results["results"]) == len(manifest["entries"]) and results["backend"] == "onnxruntime"
    out = tmp_path / "device.yaml"
    code, _, err = _run(capsys, "profile", "import", str(bundle), "--out", str(out))
    assert code == 0, err
    profile = load_profile(out)
    assert profile.provenance == "measured" and len(profile.entries) == len(manifest["entries"])
    assert profile.calibration["resnet18@1x3x32x32"].points == 2
    # --no-calibrate: the device's own calibration, not one re-fitted here (test_hw_local covers that).
    code, out_json, _ = _run(capsys, "latency", "--model", "resnet18", "--target", str(out), "--no-calibrate", "--json")
    assert code == 0 and json.loads(out_json)["calibrated"] is True and not json.loads(out_json)["calibrated_here"]


def test_measure_fp32_then_int8_on_this_host(capsys, tmp_path):
    """A real (tiny) host profile: the FP32 table, then `--precision int8` adds measured INT8 entries to it."""
    out = tmp_path / "host.yaml"
    common = ("--model", "resnet18", "--out", str(out), "--input-shape", "1x3x16x16", "--max-points", "2",
              "--calibration-points", "3", "--repeats", "5")
    code, _, err = _run(capsys, "profile", "measure", *common, "--warmup", "1")
    assert code == 0, err
    fp32 = load_profile(out)
    assert fp32.provenance == "measured" and all(e.signature.dtype == "fp32" for e in fp32.entries)
    code, _, err = _run(capsys, "profile", "measure", *common, "--precision", "int8")
    assert code == 0, err
    both = load_profile(out)
    int8 = [e for e in both.entries if e.signature.dtype == "int8"]
    assert int8 and all(e.mean_ms >= 0 and e.n > 0 for e in int8)
    assert len(both.entries) == len(fp32.entries) + len(int8)  # the FP32 table is kept
    assert "resnet18@1x3x16x16:int8" in both.calibration and "resnet18@1x3x16x16:int8" in both.validation
    # the INT8 layers' call overhead is timed among them, as the FP32 table's (not once before them)
    assert any(c.startswith("INT8 entries:") and "timed among the layers" in c for c in both.caveats)
    code, out_json, _ = _run(capsys, "latency", "--model", "resnet18", "--target", str(out), "--input-shape",
                             "1x3x16x16", "--no-calibrate", "--json")
    assert code == 0 and json.loads(out_json)["latency_ms"] > 0


@pytest.mark.parametrize(("repeatable", "warned"), [(60.0, True), (96.0, False)])
def test_validate_warns_when_the_machine_cannot_repeat_its_own_measurements(capsys, tmp_path, monkeypatch,
                                                                           repeatable, warned):
    import dataclasses
    import shutil

    from autoprune.hardware import profiling
    from autoprune.hardware.profile import Validation

    target = tmp_path / "host.yaml"
    shutil.copy(load_profile("cpu").path.strip("'"), target)
    result = Validation(samples=2, mape_pct=4.0, within_5_pct=50.0, within_10_pct=100.0, kendall_tau=1.0,
                        date="today", rounds=3, repeatable_10_pct=repeatable)
    asked = {}

    def fake_validate(profile, space, samples, seed, progress, command, pin_cpu, rounds):  # no timing in a unit test
        asked.update(rounds=rounds, command=command)
        return dataclasses.replace(profile, validation={"resnet18@1x3x32x32": result}), result, []

    monkeypatch.setattr(profiling, "validate", fake_validate)
    code, out, err = _run(capsys, "profile", "validate", "--target", str(target), "--model", "resnet18",
                          "--samples", "2", "--rounds", "3")
    assert code == 0 and asked["rounds"] == 3 and "--rounds 3" in asked["command"]
    assert f"repeated within ±10% for {repeatable:.0f}% of plans over 3 rounds" in " ".join(out.split())
    assert ("warning: this machine repeated its own measurements" in err) is warned
    assert load_profile(str(target)).validation["resnet18@1x3x32x32"].repeatable_10_pct == repeatable
