"""ADM denoising UNet (improved-diffusion layout) with MedSegDiff fusion at chosen stages.

The only module whose forward counts as nfe. It receives x_t, t and the precomputed
``ConditionFeatures``; the per-step condition work left here is the x_t-dependent half of the
fusion (FF-Parser + product/gate) and, with ``concat_image``, adding the image's first-conv share.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from segarena.methods.medsegdiff.condition import ConditionFeatures
from segarena.methods.medsegdiff.fusion import Fusion


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (cos first, as in ADM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    return F.pad(emb, (0, dim % 2))


def zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN → SiLU → conv; + time (added, or FiLM with ``scale_shift``); GN → SiLU → dropout → zero conv."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float, scale_shift: bool) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout if scale_shift else cout))
        self.out_norm = nn.GroupNorm(groups, cout)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), zero(nn.Conv2d(cout, cout, 3, padding=1)))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        e = self.emb(emb)[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, 1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        return self.skip(x) + self.out_layers(h)


class Attention(nn.Module):
    """GN → 1x1 qkv → multi-head self-attention → zero-init projection, residual."""

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # (b, heads, hw, c/heads)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """Res blocks (+ attention) at one resolution; ``forward`` yields each block's output."""

    def __init__(self, cins: list[int], cout: int, emb_dim: int, groups: int, dropout: float, scale_shift: bool,
                 attention: bool, heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, cout, emb_dim, groups, dropout, scale_shift) for c in cins)
        self.attn = nn.ModuleList(Attention(cout, heads, groups) if attention else nn.Identity() for _ in cins)


class MedSegDenoiser(nn.Module):
    """ε_θ(x_t, t | condition): ADM UNet whose encoder features at ``fusion_stages`` are fused with E^I."""

    def __init__(self, mask_channels: int, image_size: tuple[int, int], model_channels: int,
                 channel_mult: list[int], num_res_blocks: int, attention_resolutions: list[int], num_heads: int,
                 norm_groups: int, dropout: float, scale_shift: bool, fusion_stages: list[int], conditioning: str,
                 ffparser_init: str) -> None:
        super().__init__()
        levels = len(channel_mult)
        h, w = image_size
        if h % 2 ** (levels - 1) or w % 2 ** (levels - 1):
            raise ValueError(f"image size {image_size} not divisible by 2^{levels - 1}")
        if any(not 0 <= s < levels for s in fusion_stages):
            raise ValueError(f"fusion stages {fusion_stages} outside 0..{levels - 1}")
        mc, emb_dim = model_channels, 4 * model_channels
        common = {"emb_dim": emb_dim, "groups": norm_groups, "dropout": dropout, "scale_shift": scale_shift,
                  "heads": num_heads}
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.in_conv = nn.Conv2d(mask_channels, mc, 3, padding=1)
        self.channels = [mc * m for m in channel_mult]
        self.down, self.downsample, self.fusion = nn.ModuleList(), nn.ModuleList(), nn.ModuleDict()
        skips, ch = [mc], mc
        for lvl, cout in enumerate(self.channels):
            attn = (h >> lvl) in attention_resolutions
            self.down.append(Level([ch] + [cout] * (num_res_blocks - 1), cout, attention=attn, **common))
            ch = cout
            skips += [ch] * num_res_blocks
            if lvl in fusion_stages:
                self.fusion[str(lvl)] = Fusion(ch, h >> lvl, w >> lvl, conditioning, ffparser_init)
            if lvl < levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = Level([ch, ch], ch, attention=False, **common)
        self.mid_attn = Attention(ch, num_heads, norm_groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for lvl in reversed(range(levels)):
            cout = self.channels[lvl]
            cins = []
            for _ in range(num_res_blocks + 1):
                cins.append(ch + skips.pop())
                ch = cout
            self.up.append(Level(cins, cout, attention=(h >> lvl) in attention_resolutions, **common))
            if lvl > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.out = nn.Sequential(nn.GroupNorm(norm_groups, ch), nn.SiLU(), zero(nn.Conv2d(ch, mask_channels, 3,
                                                                                        padding=1)))

    def stage_channels(self, stages: list[int]) -> dict[int, int]:
        """Denoiser width at each fusion stage (the condition branch projects to it)."""
        return {s: self.channels[s] for s in stages}

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: ConditionFeatures) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t.expand(x.shape[0]), self.model_channels))
        h = self.in_conv(x)
        if cond.image_in is not None:
            h = h + cond.image_in
        skips = [h]
        for lvl, level in enumerate(self.down):
            for i, (block, attn) in enumerate(zip(level.blocks, level.attn)):
                h = attn(block(h, emb))
                if i == len(level.blocks) - 1 and str(lvl) in self.fusion:
                    h = self.fusion[str(lvl)](h, cond.terms[lvl])
                skips.append(h)
            if lvl < len(self.downsample):
                h = self.downsample[lvl](h)
                skips.append(h)
        h = self.mid.blocks[0](h, emb)
        h = self.mid.blocks[1](self.mid_attn(h), emb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attn):
                h = attn(block(torch.cat([h, skips.pop()], 1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(h)
