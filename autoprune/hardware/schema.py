"""Schema of a hardware profile file, checked field by field.

Profiles are data from outside (shipped, measured on a device, edited by hand): they are parsed with
``yaml.safe_load`` only, and every field is checked here before anything uses it. A malformed profile is
rejected with the path of the first bad field (``latency.entries[3].mean_ms``) and what was expected there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from autoprune.errors import UserError

SCHEMA_VERSION = 1
PROVENANCES = ("measured", "calibrated", "estimated")
RUNTIMES = ("onnxruntime", "tensorrt", "pytorch")
PRECISIONS = ("fp32", "fp16", "int8")
LATENCY_MODELS = ("table", "roofline")
LAYER_OPS = ("conv", "linear", "maxpool", "avgpool")  # as signature.OPS; kept here so parsing needs no torch
ROOFLINE_OPS = ("conv", "depthwise", "linear", "pool")  # as latency_models.op_type
SIGNATURE_FIELDS = ("op", "cin", "cout", "kernel", "stride", "padding", "groups", "in_h", "in_w", "dtype")


class ProfileSchemaError(UserError):
    """A profile file does not match the schema."""


def _fail(where: str, path: str, expected: str, got: Any) -> ProfileSchemaError:
    shown = repr(got)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ProfileSchemaError(f"hardware profile {where}: field {path!r}: expected {expected}, got {shown}")


class _Checker:
    """Checks values against expectations; every error names the profile and the field path."""

    def __init__(self, where: str):
        self.where = where

    def mapping(self, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Mapping:
        if not isinstance(value, Mapping):
            return self._raise(path, "a mapping", value)
        for key in required:
            if key not in value:
                raise ProfileSchemaError(
                    f"hardware profile {self.where}: field {_join(path, key)!r} is missing (required)"
                )
        unknown = sorted(set(map(str, value)) - set(required) - set(optional))
        if unknown:
            allowed = ", ".join((*required, *optional))
            raise ProfileSchemaError(
                f"hardware profile {self.where}: field {_join(path, unknown[0])!r} is not part of the schema "
                f"(allowed here: {allowed})"
            )
        return value

    def string(self, value: Any, path: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            return self._raise(path, "a non-empty string", value)
        if choices is not None and value not in choices:
            return self._raise(path, "one of " + ", ".join(choices), value)
        return value

    def integer(self, value: Any, path: str, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return self._raise(path, f"an integer >= {minimum}", value)
        return value

    def number(self, value: Any, path: str, minimum: float | None = 0.0, exclusive: bool = False) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and minimum is not None:
            ok = value > minimum if exclusive else value >= minimum
        if not ok:
            bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum}"
            return self._raise(path, f"a finite number{bound}", value)
        return float(value)

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            return self._raise(path, "true or false", value)
        return value

    def sequence(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            return self._raise(path, "a list", value)
        return value

    def _raise(self, path: str, expected: str, got: Any):
        raise _fail(self.where, path, expected, got)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate_profile_data(data: Any, where: str) -> Mapping:
    """Check a parsed profile against the schema; return it unchanged or raise :class:`ProfileSchemaError`."""
    c = _Checker(where)
    c.mapping(
        data, "",
        required=("schema_version", "name", "device", "runtime", "precision", "batch", "threads", "date",
                  "provenance", "alignment", "sparsity", "latency"),
        optional=("execution_provider", "software", "calibration", "validation", "caveats", "description"),
    )
    if data["schema_version"] != SCHEMA_VERSION:
        c._raise("schema_version", f"{SCHEMA_VERSION} (this autoprune reads schema version {SCHEMA_VERSION})",
                 data["schema_version"])
    c.string(data["name"], "name")
    c.string(data["device"], "device")
    c.string(data["runtime"], "runtime", RUNTIMES)
    c.string(data["precision"], "precision", PRECISIONS)
    c.integer(data["batch"], "batch", 1)
    c.integer(data["threads"], "threads", 0)
    c.string(str(data["date"]) if data["date"] is not None else None, "date")
    if "execution_provider" in data:
        c.string(data["execution_provider"], "execution_provider")
    for key, value in (data.get("software") or {}).items():
        c.string(str(value), f"software.{key}")
    prov = c.mapping(data["provenance"], "provenance", required=("kind", "source"))
    c.string(prov["kind"], "provenance.kind", PROVENANCES)
    c.string(prov["source"], "provenance.source")
    c.integer(data["alignment"], "alignment", 1)
    _check_sparsity(c, data["sparsity"])
    _check_latency(c, data["latency"])
    _check_per_model(c, data.get("calibration") or {}, "calibration", _check_calibration)
    _check_per_model(c, data.get("validation") or {}, "validation", _check_validation)
    for i, caveat in enumerate(c.sequence(data.get("caveats") or [], "caveats")):
        c.string(caveat, f"caveats[{i}]")
    return data


def _check_sparsity(c: _Checker, value: Any) -> None:
    c.mapping(value, "sparsity", required=("unstructured", "nm"))
    c.boolean(value["unstructured"], "sparsity.unstructured")
    for i, entry in enumerate(c.sequence(value["nm"], "sparsity.nm")):
        path = f"sparsity.nm[{i}]"
        c.mapping(entry, path, required=("pattern", "min_channels", "speedup"), optional=("grouped", "source"))
        pattern = c.string(entry["pattern"], f"{path}.pattern")
        parts = pattern.split(":")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) >= int(parts[1]) or int(parts[0]) < 1:
            c._raise(f"{path}.pattern", "an N:M pattern such as '2:4' with 0 < N < M", pattern)
        c.integer(entry["min_channels"], f"{path}.min_channels", 1)
        c.number(entry["speedup"], f"{path}.speedup", 1.0)
        if "grouped" in entry:
            c.boolean(entry["grouped"], f"{path}.grouped")


def _check_latency(c: _Checker, value: Any) -> None:
    c.mapping(value, "latency", required=("model",), optional=("entries", "roofline", "call_overhead_ms", "method"))
    kind = c.string(value["model"], "latency.model", LATENCY_MODELS)
    if "call_overhead_ms" in value:
        c.number(value["call_overhead_ms"], "latency.call_overhead_ms")
    if "method" in value:
        c.string(value["method"], "latency.method")
    if kind == "table":
        if "entries" not in value:
            raise ProfileSchemaError(f"hardware profile {c.where}: field 'latency.entries' is missing "
                                     "(required when latency.model is 'table')")
        for i, entry in enumerate(c.sequence(value["entries"], "latency.entries")):
            _check_entry(c, entry, f"latency.entries[{i}]")
    else:
        if "roofline" not in value:
            raise ProfileSchemaError(f"hardware profile {c.where}: field 'latency.roofline' is missing "
                                     "(required when latency.model is 'roofline')")
        r = c.mapping(value["roofline"], "latency.roofline",
                      required=("peak_gflops", "bandwidth_gbs", "efficiency", "fixed_ms_per_layer",
                                "bytes_per_element"),
                      optional=("fit", "int8_peak_gflops", "int8_alignment", "op_efficiency", "op_bandwidth"))
        c.number(r["peak_gflops"], "latency.roofline.peak_gflops", 0.0, exclusive=True)
        c.number(r["bandwidth_gbs"], "latency.roofline.bandwidth_gbs", 0.0, exclusive=True)
        eff = c.number(r["efficiency"], "latency.roofline.efficiency", 0.0, exclusive=True)
        if eff > 1.0:
            c._raise("latency.roofline.efficiency", "a fraction of peak in (0, 1]", eff)
        c.number(r["fixed_ms_per_layer"], "latency.roofline.fixed_ms_per_layer")
        c.number(r["bytes_per_element"], "latency.roofline.bytes_per_element", 0.0, exclusive=True)
        if "fit" in r:
            c.string(r["fit"], "latency.roofline.fit")
        if "int8_peak_gflops" in r:
            c.number(r["int8_peak_gflops"], "latency.roofline.int8_peak_gflops", 0.0, exclusive=True)
        if "int8_alignment" in r:
            c.integer(r["int8_alignment"], "latency.roofline.int8_alignment", 1)
        for name in ("op_efficiency", "op_bandwidth"):
            if name in r:
                ops = c.mapping(r[name], f"latency.roofline.{name}", required=(), optional=ROOFLINE_OPS)
                for op, factor in ops.items():
                    c.number(factor, f"latency.roofline.{name}.{op}", 0.0, exclusive=True)


def _check_entry(c: _Checker, entry: Any, path: str) -> None:
    c.mapping(entry, path, required=(*SIGNATURE_FIELDS, "mean_ms", "std_ms", "n"))
    c.string(entry["op"], f"{path}.op", LAYER_OPS)
    for key in ("cin", "cout", "kernel", "stride", "groups", "in_h", "in_w"):
        c.integer(entry[key], f"{path}.{key}", 1)
    c.integer(entry["padding"], f"{path}.padding", 0)
    c.string(entry["dtype"], f"{path}.dtype", PRECISIONS)
    c.number(entry["mean_ms"], f"{path}.mean_ms")
    c.number(entry["std_ms"], f"{path}.std_ms")
    c.integer(entry["n"], f"{path}.n", 1)


def _check_per_model(c: _Checker, value: Any, path: str, check: Callable) -> None:
    c.mapping(value, path, required=(), optional=tuple(map(str, value)) if isinstance(value, Mapping) else ())
    for key, record in value.items():
        check(c, record, f"{path}.{key}")


def _check_calibration(c: _Checker, value: Any, path: str) -> None:
    c.mapping(value, path, required=("a", "b", "points", "source"),
              optional=("date", "residual_ms", "spill_ms_per_mb", "cache_mb", "machine"))
    c.number(value["a"], f"{path}.a", 0.0, exclusive=True)
    c.number(value["b"], f"{path}.b", None)
    c.integer(value["points"], f"{path}.points", 1)
    c.string(value["source"], f"{path}.source")
    if "residual_ms" in value:
        c.number(value["residual_ms"], f"{path}.residual_ms")
    if "machine" in value:
        c.string(value["machine"], f"{path}.machine")
    for name in ("spill_ms_per_mb", "cache_mb"):
        if name in value:
            c.number(value[name], f"{path}.{name}", 0.0)
    if value.get("spill_ms_per_mb") and "cache_mb" not in value:
        c._raise(f"{path}.cache_mb", "the cache size (MB) the memory term spill_ms_per_mb counts from", "nothing")


def _check_validation(c: _Checker, value: Any, path: str) -> None:
    c.mapping(value, path, required=("samples", "mape_pct", "within_5_pct", "within_10_pct", "kendall_tau", "date"),
              optional=("machine", "command", "note", "measured_range_ms", "calibrated", "rounds",
                        "repeatable_10_pct", "ratio_mape_pct", "ratio_within_5_pct", "ratio_within_10_pct",
                        "loo_median_pct"))
    c.integer(value["samples"], f"{path}.samples", 1)
    c.number(value["mape_pct"], f"{path}.mape_pct")
    if "rounds" in value:
        c.integer(value["rounds"], f"{path}.rounds", 1)
    for name in ("ratio_mape_pct", "loo_median_pct"):
        if name in value:
            c.number(value[name], f"{path}.{name}")
    for key in ("within_5_pct", "within_10_pct", "repeatable_10_pct", "ratio_within_5_pct", "ratio_within_10_pct"):
        if key not in value:
            continue
        pct = c.number(value[key], f"{path}.{key}")
        if pct > 100:
            c._raise(f"{path}.{key}", "a percentage in [0, 100]", pct)
    tau = c.number(value["kendall_tau"], f"{path}.kendall_tau", None)
    if not -1.0 <= tau <= 1.0:
        c._raise(f"{path}.kendall_tau", "a number in [-1, 1]", tau)
    c.string(str(value["date"]), f"{path}.date")
