"""A pruned model's ONNX graph for timing, cut from the dense model's graph in milliseconds.

Timing a plan needs a model with the plan's layer shapes, not its weights. Building it the faithful way (create the
model, prune it with Torch-Pruning, export it) takes seconds per plan on a small machine — most of a
self-calibration's budget. The dense model is exported once instead, and for each plan every Conv/Gemm weight and
bias is sliced to the plan's channel counts (the arithmetic of :meth:`LayerSpec.pruned_shape`, which the cost
model prices too). The exporter has already folded BatchNorm into the convolutions, and the graph's other ops
(additions, pooling, activations) take their shapes from their inputs, so the sliced graph runs as the pruned
model would. Graphs with layers this cannot map (token-wise linear layers exported as MatMul, attention) raise
:class:`Unsliceable`, and callers fall back to the faithful path.
"""

from __future__ import annotations

from autoprune.plan import PruningPlan
from autoprune.pruning.space import SearchSpace


class Unsliceable(ValueError):
    """The dense graph has weights whose layer the search space does not describe."""


def _module_name(node_name: str) -> str:
    """The module path of an exported node: "/layer2/layer2.0/downsample/downsample.0/Conv" -> "layer2.0.downsample.0".

    The TorchScript exporter names a node by its scopes, then the op; a scope repeats the tail of the path above
    it ("layer1", "layer1.0"), so each one adds only what does not overlap.
    """
    path: list[str] = []
    for scope in node_name.strip("/").split("/")[:-1]:
        parts = scope.split(".")
        overlap = max((k for k in range(1, min(len(path), len(parts)) + 1) if path[-k:] == parts[:k]), default=0)
        path += parts[overlap:]
    return ".".join(path)


def slice_onnx(dense: bytes, space: SearchSpace, plan: PruningPlan) -> bytes:
    """The ONNX model ``dense`` (exported from ``space``'s model) with every layer cut to ``plan``'s shapes."""
    import onnx
    from onnx import helper, numpy_helper

    if plan.drop_blocks:  # removing a block removes nodes, not slices of weights: the faithful path builds it
        raise Unsliceable(f"plan drops blocks {', '.join(plan.drop_blocks)}")
    model = onnx.load_from_string(dense)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0] in inits}
    channels = space.group_channels()
    shapes = {layer.name: layer.pruned_shape(plan, channels) for layer in space.layers}
    new = []
    for node in graph.node:
        if node.op_type == "MatMul" and any(alias.get(x, x) in inits for x in node.input):
            raise Unsliceable(f"layer {node.name!r} is a MatMul with weights")
        if node.op_type not in ("Conv", "Gemm"):
            continue
        name = _module_name(node.name)
        if name not in shapes:
            raise Unsliceable(f"graph node {node.name!r} maps to no layer of the search space")
        cin, cout, groups = shapes[name]
        weight = numpy_helper.to_array(inits[alias.get(node.input[1], node.input[1])])
        if node.op_type == "Conv":
            weight = weight[:cout, : cin // groups]
            for attr in node.attribute:
                if attr.name == "group":
                    attr.i = groups
        else:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            weight = weight[:cout, :cin] if trans_b else weight[:cin, :cout]
        node.input[1] = f"{name}.sliced.weight"
        new.append(numpy_helper.from_array(weight.copy(), node.input[1]))
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(inits[alias.get(node.input[2], node.input[2])])[:cout]
            node.input[2] = f"{name}.sliced.bias"
            new.append(numpy_helper.from_array(bias.copy(), node.input[2]))
    used = {x for n in graph.node for x in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new)
    # Value infos recorded for the dense shapes would contradict the cut ones; the runtime infers them again.
    del graph.value_info[:]
    out = graph.output[0].type.tensor_type.shape
    if space.layers and space.layers[-1].op == "linear" and len(out.dim) == 2:
        out.dim[1].dim_value = shapes[space.layers[-1].name][1]
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version) \
        .SerializeToString()
