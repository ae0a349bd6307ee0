"""Layer signatures: the key of a latency-table entry.

A *signature* is everything about a conv/linear layer that decides its latency on a target: op type, in/out
channels, kernel, stride, padding, groups, input H x W and dtype. A *family* is a signature without its channel
counts: the table measures each family on a grid of channel counts and the cost model interpolates inside it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from autoprune.plan import PruningPlan
from autoprune.pruning.space import POOL_OPS, LayerSpec

OPS = ("conv", "linear", *POOL_OPS)
DTYPES = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class LayerSignature:
    """One layer shape. ``in_h``/``in_w``: input spatial size (for linear: rows per sample and 1)."""

    op: str
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: int
    groups: int
    in_h: int
    in_w: int
    dtype: str = "fp32"

    @property
    def depthwise(self) -> bool:
        """Channel-wise (cin == cout == groups): a depthwise conv or a pooling layer."""
        return self.op in POOL_OPS or (self.op == "conv" and self.groups > 1 and self.groups == self.cin == self.cout)

    @property
    def family(self) -> "FamilyKey":
        # Depthwise layers change groups with their channels, so "dw" stands in for the group count.
        groups = "dw" if self.depthwise else str(self.groups)
        return FamilyKey(self.op, self.kernel, self.stride, self.padding, groups, self.in_h, self.in_w, self.dtype)

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.op == "linear":
            return self.in_h, self.in_w
        out = lambda size: (size + 2 * self.padding - self.kernel) // self.stride + 1  # noqa: E731
        return out(self.in_h), out(self.in_w)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per sample."""
        oh, ow = self.out_hw
        return self.cout * (self.cin // self.groups) * self.kernel * self.kernel * oh * ow

    @property
    def params(self) -> int:
        """Weights plus bias (BatchNorm folds into the bias at inference); none for pooling."""
        if self.op in POOL_OPS:
            return 0
        return self.cout * (self.cin // self.groups) * self.kernel * self.kernel + self.cout

    def key(self) -> str:
        return (f"{self.op} k{self.kernel} s{self.stride} p{self.padding} g{self.groups} "
                f"{self.cin}->{self.cout} @{self.in_h}x{self.in_w} {self.dtype}")

    def to_dict(self) -> dict:
        return asdict(self)

    def with_channels(self, cin: int, cout: int) -> "LayerSignature":
        groups = cin if self.depthwise else (self.groups if self.groups == 1 else math.gcd(self.groups, math.gcd(cin, cout)))
        return LayerSignature(self.op, cin, cout, self.kernel, self.stride, self.padding, groups, self.in_h,
                              self.in_w, self.dtype)


@dataclass(frozen=True)
class FamilyKey:
    op: str
    kernel: int
    stride: int
    padding: int
    groups: str  # a number, or "dw" for depthwise
    in_h: int
    in_w: int
    dtype: str

    def describe(self) -> str:
        groups = "depthwise" if self.groups == "dw" else f"groups={self.groups}"
        return f"{self.op} {self.kernel}x{self.kernel}/s{self.stride} p{self.padding} {groups} at {self.in_h}x{self.in_w} {self.dtype}"


def dense_signature(layer: LayerSpec, dtype: str = "fp32") -> LayerSignature:
    """Signature of a layer of the unpruned model."""
    return LayerSignature(layer.op, layer.in_channels, layer.out_channels, layer.kernel, layer.stride,
                          layer.padding, layer.groups, layer.in_h, layer.in_w, dtype)


def pruned_signature(layer: LayerSpec, plan: PruningPlan, group_channels: dict[str, int],
                     dtype: str = "fp32") -> LayerSignature:
    """Signature of ``layer`` after ``plan``, by arithmetic (no model is built)."""
    cin, cout, groups = layer.pruned_shape(plan, group_channels)
    return LayerSignature(layer.op, cin, cout, layer.kernel, layer.stride, layer.padding, groups, layer.in_h,
                          layer.in_w, dtype)


def model_key(model: str, input_shape) -> str:
    """Key of per-model records (calibration, validation) in a profile: ``resnet18@1x3x32x32``."""
    return f"{model}@{'x'.join(str(int(d)) for d in input_shape)}"
