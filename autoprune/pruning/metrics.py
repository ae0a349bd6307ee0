"""Size and compute of a (pruned) model."""

from __future__ import annotations

import io
import logging
import zlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelStats:
    """Parameters (count), nonzero parameters, and multiply-accumulates per forward pass at batch 1."""

    params: int
    nonzero_params: int
    macs: int

    @property
    def mflops(self) -> float:
        """Millions of floating-point operations (one MAC = two FLOPs)."""
        return 2 * self.macs / 1e6

    @property
    def size_mb(self) -> float:
        """FP32 size of the parameters in MB."""
        return self.params * 4 / 1e6

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "nonzero_params": self.nonzero_params,
            "macs": self.macs,
            "mflops": round(self.mflops, 3),
            "size_mb": round(self.size_mb, 3),
        }


def model_stats(model: nn.Module, input_shape: tuple[int, ...]) -> ModelStats:
    """Count parameters and MACs (fvcore) of ``model`` for one input of ``input_shape`` (batch set to 1)."""
    from fvcore.nn import FlopCountAnalysis

    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    example = torch.zeros((1, *input_shape[1:]))
    was_training = model.training
    model.eval()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, example)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        macs = int(analysis.total())  # fvcore counts one fused multiply-add as one "flop"
    model.train(was_training)
    return ModelStats(params=params, nonzero_params=nonzero, macs=macs)


@dataclass(frozen=True)
class DiskSize:
    """Bytes of the serialized state dict as saved (dense) and after zlib compression, where zeros shrink."""

    dense_bytes: int
    compressed_bytes: int


def disk_size(model: nn.Module) -> DiskSize:
    """Serialize ``model``'s state dict with ``torch.save`` and measure it, raw and zlib-compressed (level 1:
    zero runs compress about as well as at higher levels, several times faster)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    return DiskSize(len(data), len(zlib.compress(data, 1)))


def pruned_metrics(model: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Everything reported for a pruned model: params, nonzero params, MACs/FLOPs (dense count, fvcore),
    size on disk (dense and compressed), overall and per-layer sparsity of conv/linear weights."""
    from autoprune.pruning.unstructured import sparsity_report

    stats = model_stats(model, input_shape)
    size = disk_size(model)
    report = sparsity_report(model)
    return {
        **stats.to_dict(),
        "flops": 2 * stats.macs,
        "dense_bytes": size.dense_bytes,
        "compressed_bytes": size.compressed_bytes,
        "sparsity": report.sparsity,
        "layer_sparsity": {layer.name: layer.sparsity for layer in report.layers},
    }
