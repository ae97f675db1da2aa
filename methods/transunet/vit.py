"""ViT over the 1x1 patches of the CNN's 1/16 map (≡ 16x16 image patches), from MONAI TransformerBlocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import TransformerBlock
from torch import nn


class HybridViT(nn.Module):
    """Patch embedding (conv 1x1) + learnable positions + pre-LN blocks + final LayerNorm.

    Dropout as the official model: ``dropout`` on the embeddings and inside the MLP, attention
    weights and attention output at ``attention_dropout`` (0 in the paper config).
    """

    def __init__(self, in_channels: int, grid: tuple[int, int], hidden_size: int = 768, mlp_dim: int = 3072,
                 num_layers: int = 12, num_heads: int = 12, dropout: float = 0.1,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.grid = grid
        self.patch_embed = nn.Conv2d(in_channels, hidden_size, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], hidden_size))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList()
        for _ in range(num_layers):
            block = TransformerBlock(hidden_size, mlp_dim, num_heads, dropout_rate=dropout, qkv_bias=True)
            block.attn.drop_weights = nn.Dropout(attention_dropout)
            block.attn.drop_output = nn.Dropout(attention_dropout)
            block.norm_cross_attn = nn.Identity()  # unused without cross-attention; would idle under DDP
            for norm in (block.norm1, block.norm2):
                norm.eps = 1e-6
            self.blocks.append(block)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)

    def positions(self, gh: int, gw: int) -> torch.Tensor:
        """Learned positions, bilinearly resized when the input grid differs from the built one."""
        if (gh, gw) == self.grid:
            return self.pos_embed
        pos = self.pos_embed.reshape(1, *self.grid, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(gh, gw), mode="bilinear", align_corners=False)
        return pos.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) map → (B, h·w, hidden) tokens."""
        gh, gw = x.shape[-2:]
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = self.drop(tokens + self.positions(gh, gw))
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)
