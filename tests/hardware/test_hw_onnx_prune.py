"""Plans' ONNX graphs sliced from the dense export have exactly the shapes of the Torch-Pruning route."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from autoprune.hardware import device_runner
from autoprune.hardware.onnx_prune import slice_onnx
from autoprune.hardware.profiling import build_pruned, random_plans
from autoprune.models import create_model
from autoprune.onnx_export import onnx_bytes
from autoprune.pruning.space import generate_space


def _weight_shapes(data: bytes) -> list[tuple[int, ...]]:
    graph = onnx.load_from_string(data).graph
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}
    return [(n.op_type, inits[alias.get(n.input[1], n.input[1])]) for n in graph.node if n.op_type in ("Conv", "Gemm")]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_sliced_graph_matches_the_pruned_export(name):
    shape = (1, 3, 32, 32)
    space = generate_space(create_model(name, 10), name, shape, alignment=16)
    dense = onnx_bytes(create_model(name, 10).eval(), shape)
    for plan in random_plans(space, 2, 7, 16):
        sliced = slice_onnx(dense, space, plan)
        assert _weight_shapes(sliced) == _weight_shapes(onnx_bytes(build_pruned(space, plan), shape))
        session = device_runner.ort_session(sliced)
        out = session.run(None, {session.get_inputs()[0].name: np.zeros(shape, np.float32)})[0]
        assert out.shape == (1, 10)
