"""INT8: the quantized ONNX model really runs in onnxruntime, is integer, and keeps the FP32 accuracy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from autoprune.errors import UserError
from autoprune.onnx_export import onnx_bytes
from autoprune.plan import PruningPlan
from autoprune.quantize import calibration_samples, onnx_accuracy, quantize_and_evaluate
from autoprune.training import evaluate



@pytest.fixture(scope="module")
def quantized(dense):
    train = dense.data.loader("train", 64, dense.seed)
    val = dense.data.loader("val", 256, dense.seed, shuffle=False)
    return quantize_and_evaluate(dense.model, dense.shape, train, val, dense.data.num_classes, samples=64)


def test_quantized_model_is_int8_and_runs_close_to_fp32(dense, quantized):
    val = dense.data.loader("val", 256, dense.seed, shuffle=False)
    fp32 = evaluate(dense.model, val, dense.data.num_classes)
    assert fp32.accuracy > 0.5  # the baseline learned the task, so a quantization error would show
    # Measured in onnxruntime on the same validation split: every sample counted, within 5 points of FP32.
    assert sum(quantized.eval.total_per_class) == sum(fp32.total_per_class)
    assert abs(quantized.eval.accuracy - fp32.accuracy) <= 0.05
    graph = onnx.load_from_string(quantized.onnx).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 20  # 20 convolutions + the classifier carry INT8 weights
    fp32_bytes = len(onnx_bytes(dense.model, dense.shape))
    assert len(quantized.onnx) < 0.4 * fp32_bytes


def test_onnx_accuracy_of_the_fp32_export_matches_pytorch(dense):
    val = dense.data.loader("val", 256, dense.seed, shuffle=False)
    torch_eval = evaluate(dense.model, val, dense.data.num_classes)
    ort_eval = onnx_accuracy(onnx_bytes(dense.model, dense.shape), val, dense.data.num_classes)
    assert ort_eval.total_per_class == torch_eval.total_per_class
    assert abs(ort_eval.accuracy - torch_eval.accuracy) <= 1 / sum(torch_eval.total_per_class) + 1e-9


def test_calibration_samples_come_from_the_loader(dense):
    samples = calibration_samples(dense.data.loader("train", 16, dense.seed), 40)
    assert samples.shape == (40, *dense.shape[1:]) and samples.dtype == np.float32
    assert float(np.abs(samples).sum()) > 0


def test_plan_precision_keeps_fp32_dicts_unchanged():
    plan = PruningPlan(keep_ratios={"conv1": 0.5}, alignment=8)
    assert "precision" not in plan.to_dict()
    int8 = PruningPlan(keep_ratios={"conv1": 0.5}, alignment=8, precision="int8")
    assert int8.to_dict()["precision"] == "int8"
    assert PruningPlan.from_dict(int8.to_dict()) == int8 and int8 != plan
    with pytest.raises(UserError, match="precision 'int4'"):
        PruningPlan(precision="int4")
