"""Attention blocks Torch-Pruning can cut by whole heads.

``nn.MultiheadAttention`` ties its inner (per-head) width to the embedding width, so removing a head would
also have to shrink the residual stream. :class:`HeadAttention` computes the same function with a separate
``qkv`` and ``proj`` linear layer, the layout Torch-Pruning's ``num_heads`` support expects; its inner width
is ``num_heads * head_dim`` and can shrink by whole heads on its own.
"""

from __future__ import annotations

import torch
from torch import nn

from autoprune.errors import UserError


class HeadAttention(nn.Module):
    """Self-attention with a fused ``qkv`` projection (embed -> 3 * inner) and an output ``proj`` (inner -> embed).

    Called like ``nn.MultiheadAttention(batch_first=True)`` with query = key = value; returns (output, None).
    """

    def __init__(self, embed_dim: int, num_heads: int, inner_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        inner = embed_dim if inner_dim is None else inner_dim
        self.num_heads = num_heads
        self.qkv = nn.Linear(embed_dim, 3 * inner, bias=bias)
        self.proj = nn.Linear(inner, embed_dim, bias=bias)

    @property
    def head_dim(self) -> int:
        return self.qkv.out_features // (3 * self.num_heads)

    def forward(self, query, key=None, value=None, need_weights: bool = False, **_unused):
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("HeadAttention only computes self-attention (query is key is value)")
        batch, tokens, _ = query.shape
        head_dim = self.head_dim
        qkv = self.qkv(query).reshape(batch, tokens, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * head_dim**-0.5
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * head_dim)
        return self.proj(out), None


def from_multihead(mha: nn.MultiheadAttention) -> HeadAttention:
    """An equivalent :class:`HeadAttention` (same weights, same outputs) for a batch-first self-attention MHA."""
    if not mha.batch_first or not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
        raise UserError(
            "attention layer cannot be converted for head pruning: only batch-first self-attention "
            "nn.MultiheadAttention without bias_k/add_zero_attn is supported"
        )
    block = HeadAttention(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None)
    with torch.no_grad():
        block.qkv.weight.copy_(mha.in_proj_weight)
        block.proj.weight.copy_(mha.out_proj.weight)
        if mha.in_proj_bias is not None:
            block.qkv.bias.copy_(mha.in_proj_bias)
            block.proj.bias.copy_(mha.out_proj.bias)
    return block.train(mha.training)


def convert_attention(model: nn.Module) -> nn.Module:
    """Replace every ``nn.MultiheadAttention`` in ``model`` (in place) by an equivalent :class:`HeadAttention`."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(parent, child_name, from_multihead(child))
    return model


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """``{qkv linear: number of heads}`` for every :class:`HeadAttention` (Torch-Pruning's ``num_heads``)."""
    return {m.qkv: m.num_heads for m in model.modules() if isinstance(m, HeadAttention)}
