"""cDAL generator: NCSN++-style U-Net predicting x0 from (x_{t+1}, t, image, z).

Latent z → mapping network → AdaGN scale/shift in every ResBlock norm (the few-step trick of
DDGAN); the image enters through a full-resolution residual encoder added to the first feature
map; x_{t+1} also feeds a residual input pyramid (``progressive_input='residual'``): at level 0 the
pyramid is x_{t+1}, and at every level transition it is downsampled (``resample``, then conv3x3), combined with
the downsampled features as (pyramid + h)/√2, and that combination becomes both h and the next
pyramid, so from level 1 on the pyramid carries the image too. The time MLP is nf → 4nf → 4nf as
in NCSN++ (not the discriminator's ``t_emb``). Residual branches, attention outputs and the head
start at zero (NCSN++ ``init_scale=0``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segarena.methods.cdal.layers import SQRT2, Resample, TimeEmbedding, conv, groups


class PixelNorm(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)


def mapping_network(nz: int, z_emb: int, n_mlp: int) -> nn.Sequential:
    """PixelNorm → Dense(nz → z_emb) → SiLU → n_mlp x [Dense → SiLU]."""
    layers: list[nn.Module] = [PixelNorm(), nn.Linear(nz, z_emb), nn.SiLU()]
    for _ in range(n_mlp):
        layers += [nn.Linear(z_emb, z_emb), nn.SiLU()]
    return nn.Sequential(*layers)


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine, then gamma(w)·h + β(w) with gamma-bias 1 and β-bias 0."""

    def __init__(self, channels: int, z_dim: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups(channels), channels, eps=1e-6, affine=False)
        self.style = nn.Linear(z_dim, 2 * channels)
        nn.init.zeros_(self.style.bias)
        self.style.bias.data[:channels] = 1.0

    def forward(self, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.style(w)[..., None, None].chunk(2, 1)
        return gamma * self.norm(h) + beta


class ResBlock(nn.Module):
    """BigGAN ResBlock with AdaGN and a time bias; optional up/down; skip rescaled by 1/√2."""

    def __init__(self, cin: int, cout: int, t_dim: int, z_dim: int, dropout: float = 0.0,
                 resample: str | None = None, kind: str = "fir") -> None:
        super().__init__()
        self.norm1, self.conv1 = AdaptiveGroupNorm(cin, z_dim), conv(cin, cout)
        self.temb = nn.Linear(t_dim, cout)
        self.norm2, self.drop = AdaptiveGroupNorm(cout, z_dim), nn.Dropout(dropout)
        self.conv2 = conv(cout, cout, zero=True)
        self.resample = Resample(resample, kind) if resample else nn.Identity()
        self.skip = conv(cin, cout, 1) if cin != cout or resample else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h = self.resample(F.silu(self.norm1(x, w)))
        x = self.resample(x)
        h = self.conv1(h) + self.temb(F.silu(temb))[..., None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h, w))))
        return (self.skip(x) + h) / SQRT2


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels (NCSN++ ``AttnBlockpp``, skip-rescaled)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups(channels), channels, eps=1e-6)
        self.qkv = conv(channels, 3 * channels, 1)
        self.out = conv(channels, channels, 1, zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, -1)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, hh, ww)
        return (x + self.out(h)) / SQRT2


class EncoderBlock(nn.Module):
    """Plain residual block of the image encoder (no t, no z, full resolution)."""

    def __init__(self, channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups(channels), channels, eps=1e-6), nn.SiLU(), conv(channels, channels),
            nn.GroupNorm(groups(channels), channels, eps=1e-6), nn.SiLU(), nn.Dropout(dropout),
            conv(channels, channels, zero=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CDALGenerator(nn.Module):
    """x̂0 = G(x_{t+1}, t, image, z) in [-1, 1] (tanh head)."""

    def __init__(self, label_channels: int, image_channels: int, image_size: int, *, nf: int,
                 ch_mult: Sequence[int], num_res_blocks: int, attn_resolutions: Sequence[int],
                 enc_layers: int, enc_blocks: int, nz: int, z_emb: int, n_mlp: int,
                 dropout: float = 0.0, resample: str = "fir") -> None:
        super().__init__()
        self.nz = nz
        t_emb = 4 * nf  # NCSN++ time MLP width
        self.time = TimeEmbedding(nf, t_emb, nn.SiLU())
        self.mapping = mapping_network(nz, z_emb, n_mlp)
        self.conv_in = conv(label_channels, nf)
        self.encoder = nn.Sequential(conv(image_channels, nf),
                                     *[EncoderBlock(nf, dropout) for _ in range(enc_layers * enc_blocks)])

        def res(cin: int, cout: int, updown: str | None = None) -> ResBlock:
            return ResBlock(cin, cout, t_emb, z_emb, dropout, updown, resample)

        def attn(c: int, size: int) -> nn.Module:
            return AttnBlock(c) if size in attn_resolutions else nn.Identity()

        self.down, self.up = nn.ModuleList(), nn.ModuleList()
        chans, skips, size, c, pyr_c = [nf * m for m in ch_mult], [nf], image_size, nf, label_channels
        for level, ch in enumerate(chans):
            stage = nn.ModuleDict({"blocks": nn.ModuleList(), "attns": nn.ModuleList()})
            for _ in range(num_res_blocks):
                stage["blocks"].append(res(c, ch))
                stage["attns"].append(attn(ch, size))
                c = ch
                skips.append(c)
            if level < len(chans) - 1:
                stage["resample"] = res(c, c, "down")
                stage["pyramid"] = nn.Sequential(Resample("down", resample), conv(pyr_c, c))
                pyr_c, size = c, size // 2
                skips.append(c)
            self.down.append(stage)
        self.mid = nn.ModuleList([res(c, c), AttnBlock(c), res(c, c)])
        for level in reversed(range(len(chans))):
            stage = nn.ModuleDict({"blocks": nn.ModuleList()})
            for _ in range(num_res_blocks + 1):
                stage["blocks"].append(res(c + skips.pop(), chans[level]))
                c = chans[level]
            stage["attn"] = attn(c, size)
            if level > 0:
                stage["resample"] = res(c, c, "up")
                size *= 2
            self.up.append(stage)
        self.head = nn.Sequential(nn.GroupNorm(groups(c), c, eps=1e-6), nn.SiLU(), conv(c, label_channels, zero=True))

    def forward(self, x: torch.Tensor, t: torch.Tensor, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        temb, w = self.time(t), self.mapping(z)
        h = self.conv_in(x) + self.encoder(image)
        hs, pyramid = [h], x
        for stage in self.down:
            for block, attn in zip(stage["blocks"], stage["attns"]):
                h = attn(block(h, temb, w))
                hs.append(h)
            if "resample" in stage:  # level transition: the residual input pyramid becomes the combined feature
                pyramid = (stage["pyramid"](pyramid) + stage["resample"](h, temb, w)) / SQRT2
                h = pyramid
                hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, temb, w)), temb, w)
        for stage in self.up:
            for block in stage["blocks"]:
                h = block(torch.cat([h, hs.pop()], 1), temb, w)
            h = stage["attn"](h)
            if "resample" in stage:
                h = stage["resample"](h, temb, w)
        return torch.tanh(self.head(h))
