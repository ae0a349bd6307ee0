"""Long measurements resume: `profile measure` and `profile run` keep every timing as it is taken."""

from __future__ import annotations

import json

import pytest

from autoprune.hardware import LayerSignature, device_runner, load_profile
from autoprune.hardware.measure import Timing
from autoprune.hardware.profiling import checkpoint_path, export_bundle, layer_key, measure_table, overhead_probes

SIGS = [LayerSignature("conv", 8, c, 3, 1, 1, 1, 8, 8) for c in (8, 16, 32)]


class Interrupt(Exception):
    pass


@pytest.mark.timeout(120)
def test_an_interrupted_table_measurement_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    timing = Timing(2, 12, 3)
    checkpoint = device_runner.Checkpoint(tmp_path / "t.partial.jsonl")

    def stop_after_first_pass(done, total):  # called once per pass: Ctrl-C as the first of three passes ends
        raise Interrupt

    with pytest.raises(Interrupt):
        measure_table(SIGS, "onnxruntime", 1, timing, stop_after_first_pass, checkpoint=checkpoint)
    lines = [json.loads(x) for x in checkpoint.path.read_text().splitlines()]
    assert len(lines) == len(SIGS) and {x["pass"] for x in lines} == {0}
    assert all(len(x["samples"]) == 4 for x in lines)  # 12 runs in 3 passes
    # A torn last line (the process died mid-write) is ignored, not fatal.
    with checkpoint.path.open("a") as fh:
        fh.write('{"key": "layer conv')
    sessions = []
    real = device_runner.ort_session
    monkeypatch.setattr(device_runner, "ort_session", lambda *a, **k: sessions.append(1) or real(*a, **k))
    resumed = device_runner.Checkpoint(checkpoint.path)
    assert len(resumed) == len(SIGS)
    entries, _ = measure_table(SIGS, "onnxruntime", 1, timing, checkpoint=resumed)
    assert all(1 <= e.n <= 12 for e in entries)
    stored = [json.loads(x) for x in resumed.path.read_text().splitlines()[len(SIGS) + 1:]]  # after the torn line
    assert sorted(x["pass"] for x in stored) == [1, 1, 1, 2, 2, 2]  # only the missing passes were timed
    # All three signatures still needed passes 1-2, so each got a session (+ the call-overhead probes, timed
    # afresh on every run among the layers, in a second); a fully stored signature gets none.
    probes = overhead_probes(len(SIGS))
    assert len(sessions) == len(SIGS) + probes
    done = device_runner.Checkpoint(resumed.path)
    sessions.clear()
    again, _ = measure_table(SIGS, "onnxruntime", 1, timing, checkpoint=done)
    assert sessions == [1] * probes and [e.mean_ms for e in again] == pytest.approx([e.mean_ms for e in entries], abs=0.1)


def test_checkpoint_keys_say_how_a_layer_was_timed():
    assert layer_key(SIGS[0], 1, Timing(2, 12, 3)) != layer_key(SIGS[0], 1, Timing(2, 24, 3))
    assert layer_key(SIGS[0], 1, Timing(2, 12, 3)) != layer_key(SIGS[0], 2, Timing(2, 12, 3))
    assert checkpoint_path(__import__("pathlib").Path("/x/host.yaml")).name == "host.yaml.partial.jsonl"


@pytest.mark.timeout(120)
def test_profile_run_resumes_and_clears_its_checkpoint(tmp_path, resnet_space):
    bundle = tmp_path / "bundle"
    export_bundle(resnet_space, bundle, 16, "fp32", max_points=2, calibration_plans=1)
    manifest = json.loads((bundle / device_runner.MANIFEST).read_text())
    first = manifest["entries"][0]
    key = f"{first['file']} onnxruntime threads=1 warmup=20 repeats=100 precision=fp32 runs=100"
    done = {"mean_ms": 123.0, "std_ms": 0.0, "n": 1, "median_ms": 123.0, "rejected": 0}
    device_runner.Checkpoint(bundle / device_runner.PARTIAL).put(key, done)
    results = json.loads(device_runner.run_manifest(bundle).read_text())
    assert results["results"][0]["mean_ms"] == 123.0  # taken from the checkpoint, not re-timed
    assert all(r["mean_ms"] < 50 for r in results["results"][1:])
    assert not (bundle / device_runner.PARTIAL).exists()


@pytest.mark.timeout(120)
def test_validate_never_writes_into_the_shipped_profile(tmp_path, capsys):
    from autoprune.cli import main
    from autoprune.paths import autoprune_home

    shipped = load_profile("cpu").file
    before = shipped.read_bytes()
    out = tmp_path / "validated.yaml"
    argv = ["profile", "validate", "--target", "cpu", "--model", "resnet18", "--samples", "2", "--input-shape",
            "1x3x32x32"]
    assert main([*argv, "--out", str(out)]) == 0
    assert load_profile(out).validation["resnet18@1x3x32x32"].samples == 2
    assert main(argv) == 0
    copy = autoprune_home() / "hardware_profiles" / f"{load_profile(shipped).name}.yaml"
    assert load_profile(copy).validation["resnet18@1x3x32x32"].samples == 2
    assert shipped.read_bytes() == before
    capsys.readouterr()
    copy.unlink()
