"""Profile files: schema validation errors name the field and what is expected; round trips; lookup."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from autoprune.errors import UserError
from autoprune.hardware import ProfileSchemaError, available_targets, load_profile, save_profile
from autoprune.hardware.profile import profile_from_dict

from .conftest import table_profile


@pytest.fixture()
def valid(resnet_space):
    return table_profile(resnet_space, max_points=2).to_dict()


def _error(data) -> str:
    with pytest.raises(ProfileSchemaError) as info:
        profile_from_dict(data, "'x.yaml'")
    return str(info.value)


def test_valid_profile_round_trips_through_yaml(tmp_path, resnet_space):
    profile = table_profile(resnet_space, max_points=2)
    path = save_profile(profile, tmp_path / "p.yaml")
    loaded = load_profile(path)
    assert [e.signature for e in loaded.entries] == [e.signature for e in profile.entries]
    assert [e.mean_ms for e in loaded.entries] == pytest.approx([e.mean_ms for e in profile.entries], abs=1e-6)
    assert (loaded.alignment, loaded.provenance, loaded.runtime) == (16, "measured", "onnxruntime")
    assert yaml.safe_load(path.read_text())["latency"]["entries"][0]["mean_ms"] == pytest.approx(
        profile.entries[0].mean_ms, abs=1e-6)


@pytest.mark.parametrize(
    ("mutate", "field", "expected"),
    [
        (lambda d: d["latency"]["entries"][1].__setitem__("mean_ms", "fast"), "latency.entries[1].mean_ms",
         "a finite number >= 0.0"),
        (lambda d: d["latency"]["entries"][0].__setitem__("cin", 0), "latency.entries[0].cin", "an integer >= 1"),
        (lambda d: d["provenance"].__setitem__("kind", "guessed"), "provenance.kind",
         "one of measured, calibrated, estimated"),
        (lambda d: d.__setitem__("runtime", "tflite"), "runtime", "one of onnxruntime, tensorrt, pytorch"),
        (lambda d: d["sparsity"]["nm"].append({"pattern": "4:2", "min_channels": 8, "speedup": 1.2}),
         "sparsity.nm[0].pattern", "an N:M pattern"),
        (lambda d: d.__setitem__("alignment", -8), "alignment", "an integer >= 1"),
    ],
)
def test_malformed_field_is_named_with_expectation(valid, mutate, field, expected):
    data = copy.deepcopy(valid)
    mutate(data)
    message = _error(data)
    assert f"field {field!r}" in message and expected in message and "x.yaml" in message


def test_missing_and_unknown_fields_are_named(valid):
    data = copy.deepcopy(valid)
    del data["latency"]["entries"][0]["std_ms"]
    assert "'latency.entries[0].std_ms' is missing" in _error(data)
    data = copy.deepcopy(valid)
    data["threds"] = 1
    assert "'threds' is not part of the schema" in _error(data)
    data = copy.deepcopy(valid)
    data["latency"]["model"] = "roofline"
    assert "'latency.roofline' is missing" in _error(data)


def test_a_yaml_file_with_code_is_not_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_profile(path)


def test_shipped_profiles_validate_and_aliases_resolve():
    targets = {t.name: t for t in available_targets()}
    assert {"jetson-nano-trt-fp16", "jetson-agx-xavier-trt-fp16", "jetson-agx-orin-trt-fp16",
            "jetson-orin-nano-trt-fp16"} <= set(targets)
    nano = load_profile("jetson")
    assert nano.name == "jetson-nano-trt-fp16" and nano.provenance == "calibrated" and nano.alignment == 8
    assert "9 published measurements" in nano.provenance_source
    assert load_profile("orin").provenance == "estimated"
    assert targets["jetson-nano-trt-fp16"].aliases[0] == "jetson"


def test_unknown_target_suggests_close_matches():
    with pytest.raises(UserError, match="did you mean 'jetson'"):
        load_profile("jetsn")


def test_calibration_memory_term_round_trips_and_needs_its_cache_size(valid):
    from autoprune.hardware.profile import Calibration, Validation

    plain = {"a": 1.05, "b": 0.0, "points": 30, "source": "fit"}  # as written before the memory term existed
    data = copy.deepcopy(valid)
    data["calibration"] = {"resnet18@1x3x32x32": dict(plain)}
    old = profile_from_dict(data, "'x.yaml'").calibration["resnet18@1x3x32x32"]
    assert old.spill_ms_per_mb == 0.0 and old.cache_mb is None and old.spill_ms(80.0) == 0.0
    # Records without a memory term (and single-round validations) are written as older versions read them.
    profile = profile_from_dict(data, "'x.yaml'")
    written = dataclasses.replace(profile, validation={"k": Validation(2, 1.0, 100.0, 100.0, 1.0, "today")}).to_dict()
    assert "spill_ms_per_mb" not in written["calibration"]["resnet18@1x3x32x32"]
    assert "cache_mb" not in written["calibration"]["resnet18@1x3x32x32"] and "rounds" not in written["validation"]["k"]
    spilled = dataclasses.replace(profile, calibration={"k": Calibration(1.0, 0.0, 30, "fit", spill_ms_per_mb=0.01,
                                                                         cache_mb=33.5)})
    again = profile_from_dict(spilled.to_dict(), "'x.yaml'").calibration["k"]
    assert (again.spill_ms_per_mb, again.cache_mb) == (0.01, 33.5)
    data["calibration"]["resnet18@1x3x32x32"]["spill_ms_per_mb"] = 0.01
    assert "'calibration.resnet18@1x3x32x32.cache_mb'" in _error(data)
    data["calibration"]["resnet18@1x3x32x32"]["cache_mb"] = -1
    assert "a finite number >= 0.0" in _error(data)
