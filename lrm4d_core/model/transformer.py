"""Pre-LayerNorm transformer (SPEC §2) on `torch.nn.functional.scaled_dot_product_attention`.

Each block: x = x + Attn(LN(x)); x = x + MLP(LN(x)), MLP = Linear -> GeLU (exact erf form) -> Linear.
Attention is full (non-causal) self-attention over all tokens of all views with no mask and no
positional embedding, so the network is equivariant to permutations of the tokens. SDPA picks
FlashAttention / memory-efficient / cuDNN kernels on CUDA for bf16 inputs and a math kernel on CPU.

Shapes: tokens [B, T, d].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["Attention", "MLP", "Block", "Transformer"]


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv Linear(d, 3d), SDPA, output Linear(d, d)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, heads, T, D/heads]
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN block: x + Attn(LN(x)), then + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """A stack of `Block`s. With `grad_checkpointing`, each block's activations are recomputed in
    backward (torch.utils.checkpoint, use_reentrant=False, which also replays autocast state);
    it is only applied when autograd is recording, so inference pays nothing."""

    def __init__(self, dim: int, layers: int, heads: int, mlp_hidden: int, grad_checkpointing: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_hidden) for _ in range(layers))
        self.grad_checkpointing = grad_checkpointing

    def forward(self, x: Tensor) -> Tensor:
        use_ckpt = self.grad_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if use_ckpt else block(x)
        return x
