"""Real measurements on this machine with onnxruntime: a few layer signatures and a whole model."""

from __future__ import annotations

import pytest
from torch import nn

from autoprune.hardware import LayerSignature, measure_model_latency
from autoprune.hardware.device_runner import robust_stats
from autoprune.hardware.measure import Timing
from autoprune.hardware.profiling import measure_table, micro_model


def test_robust_stats_drop_a_preempted_run():
    samples = [1.0 + 0.01 * (i % 5) for i in range(40)] + [9.0]
    stats = robust_stats(samples)
    assert stats["rejected"] == 1 and stats["n"] == 40
    assert stats["mean_ms"] == pytest.approx(sum(samples[:-1]) / 40)


def test_micro_models_have_the_signature_shape():
    sig = LayerSignature("conv", 24, 40, 3, 2, 1, 1, 16, 16)
    model, shape = micro_model(sig)
    conv = model[0]
    assert (conv.in_channels, conv.out_channels, conv.stride, shape) == (24, 40, (2, 2), (1, 24, 16, 16))
    dw = LayerSignature("conv", 32, 32, 3, 1, 1, 32, 8, 8)
    assert micro_model(dw)[0][0].groups == 32


def test_measuring_a_few_signatures_orders_them_by_work():
    small = LayerSignature("conv", 16, 16, 3, 1, 1, 1, 16, 16)
    large = LayerSignature("conv", 128, 128, 3, 1, 1, 1, 16, 16)  # 64x the MACs
    fc = LayerSignature("linear", 128, 10, 1, 1, 0, 1, 1, 1)
    entries, overhead = measure_table([small, large, fc], "onnxruntime", 1, Timing(5, 40))
    by_sig = {e.signature: e for e in entries}
    assert overhead > 0
    assert all(e.n >= 20 and e.mean_ms >= 0 and e.std_ms >= 0 for e in entries)
    assert by_sig[large].mean_ms > 4 * by_sig[small].mean_ms


def test_measure_model_latency_reports_provenance():
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(32, 10))
    result = measure_model_latency(model, (1, 3, 32, 32), threads=1, warmup=5, repeats=30)
    assert result.n + result.rejected == 30 and 0 < result.median_ms < 1000
    assert result.mean_ms > 0 and result.std_ms >= 0
    assert "onnxruntime" in result.provenance and "1 thread" in result.provenance and result.date[:2] == "20"
    torch_result = measure_model_latency(model, (1, 3, 32, 32), warmup=2, repeats=10, backend_name="torch")
    assert "PyTorch" in torch_result.provenance and torch_result.mean_ms > 0


def test_the_call_overhead_is_timed_among_the_layers_and_never_exceeds_the_cheapest(monkeypatch):
    """An overhead timed once at a busy moment read 2.3x too high and zeroed most of a table; it is timed beside
    the layers now, its median kept, and capped at the cheapest layer (a layer's graph is a call too)."""
    from autoprune.hardware import device_runner
    from autoprune.hardware.profiling import overhead_probes

    sigs = [LayerSignature("conv", 16 * (i + 1), 16, 1, 1, 0, 1, 8, 8) for i in range(40)]
    seen = {}

    def fake(items, threads, warmup, repeats, rounds, progress=None, keys=None, checkpoint=None):
        seen["keys"] = keys
        out = []
        for i, key in enumerate(keys):
            ms = 0.050 if key is None else 0.020 + 0.001 * i  # every probe reads 0.05 ms: above the cheapest layer
            out.append({"median_ms": ms, "mean_ms": ms + 0.001, "std_ms": 0.0, "n": repeats})
        return out

    monkeypatch.setattr(device_runner, "time_ort_many", fake)
    entries, overhead = measure_table(sigs, "onnxruntime", 1, Timing(1, 4, 2))
    probes = [k for k in seen["keys"] if k is None]
    assert len(probes) == overhead_probes(len(sigs)) == 3
    assert seen["keys"][0] is None and seen["keys"][-1] is not None  # spread over the pass, not all at one end
    first_layer = min(i for i, k in enumerate(seen["keys"]) if k is not None)
    assert overhead == pytest.approx(0.020 + 0.001 * first_layer)  # capped at the cheapest layer's median
    assert len(entries) == len(sigs) and all(e.mean_ms > 0 for e in entries)
