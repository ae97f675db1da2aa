"""Local autoencoder weights for SDSeg (``ae_weights: PATH``) in three key layouts, mapped onto MONAI.

Layouts: ``monai`` (a MONAI ``AutoencoderKL`` state dict, e.g. a segarena checkpoint's
``modules.ae``), ``compvis`` (the LDM ``AutoencoderKL``: a bare first-stage checkpoint such as
kl-f8's ``model.ckpt``, or a whole LDM/SDSeg checkpoint whose keys start with ``first_stage_model.``)
and ``diffusers`` (``diffusers.AutoencoderKL``: a state dict file, a ``.safetensors`` file or a
``save_pretrained`` folder). Nothing is downloaded.

A CompVis/diffusers autoencoder differs from MONAI's stock one in three places, so for those
layouts the MONAI model is built *LDM-shaped* (``build_ldm_autoencoder``) and then reproduces the
source model's outputs exactly: (1) the decoder has ``num_res_blocks + 1`` res blocks per level;
(2) SiLU after the last GroupNorm of encoder and decoder (MONAI has none); (3) ``double_z``: the
encoder's last conv emits 2·latent channels (mean and log-variance halves) and the two MONAI
1x1 quant convs take the mean / log-variance rows of the LDM ``quant_conv``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, SpatialAttentionBlock, Upsample
from monai.networks.nets import AutoencoderKL
from monai.networks.nets.autoencoderkl import AEKLDownsample, AEKLResBlock, Decoder
from torch import nn

from segarena.methods.sdseg.autoencoder import MASK_CHANNELS, build_autoencoder
from segarena.platform.errors import SpecError

LAYOUTS = ("monai", "compvis", "diffusers")
_DIFFUSERS_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_IGNORED_PREFIXES = ("loss.",)  # the LDM autoencoder checkpoint also holds its LPIPS/discriminator loss


@dataclass(frozen=True)
class LoadedAutoencoder:
    ae: AutoencoderKL
    layout: str
    sha256: str  # of the weights file (first 12 hex digits), for the card tags


class GroupNormSiLU(nn.GroupNorm):
    """GroupNorm followed by SiLU (LDM's ``norm_out`` + ``nonlinearity``); same parameters as GroupNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(super().forward(x))


def build_ldm_autoencoder(hp: dict[str, Any]) -> AutoencoderKL:
    """MONAI ``AutoencoderKL`` reshaped to the LDM/diffusers architecture of the profile's size."""
    if not hp["ae_attention"]:
        raise SpecError("sdseg: ae_weights in the compvis/diffusers layout needs ae_attention: true "
                        "(LDM autoencoders always have the mid block's res blocks and attention)")
    ae = build_autoencoder(hp)
    levels, latent = len(hp["ae_channels"]), hp["latent_channels"]
    ae.decoder = Decoder(spatial_dims=2, channels=tuple(hp["ae_channels"]), in_channels=latent,
                         out_channels=MASK_CHANNELS, num_res_blocks=(hp["ae_res_blocks"] + 1,) * levels,
                         norm_num_groups=hp["ae_norm_groups"], norm_eps=1e-6, attention_levels=(False,) * levels,
                         with_nonlocal_attn=True)
    for part in (ae.encoder, ae.decoder):
        norm = part.blocks[-2]
        part.blocks[-2] = GroupNormSiLU(norm.num_groups, norm.num_channels, norm.eps)
    last = ae.encoder.blocks[-1].conv
    ae.encoder.blocks[-1].conv = nn.Conv2d(last.in_channels, 2 * latent, 3, padding=1)
    ae.quant_conv_mu.conv = nn.Conv2d(2 * latent, latent, 1)
    ae.quant_conv_log_sigma.conv = nn.Conv2d(2 * latent, latent, 1)
    return ae


# key mapping --------------------------------------------------------------------------------
_SUFFIXES: dict[str, dict[str, str]] = {  # CompVis parameter suffix → MONAI suffix, per block kind
    "conv": {"weight": "conv.weight", "bias": "conv.bias"},
    "res": {"norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias", "conv1.weight": "conv1.conv.weight",
            "conv1.bias": "conv1.conv.bias", "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
            "conv2.weight": "conv2.conv.weight", "conv2.bias": "conv2.conv.bias",
            "nin_shortcut.weight": "nin_shortcut.conv.weight", "nin_shortcut.bias": "nin_shortcut.conv.bias"},
    "down": {"conv.weight": "conv.conv.weight", "conv.bias": "conv.conv.bias"},
    "up": {"conv.weight": "postconv.conv.weight", "conv.bias": "postconv.conv.bias"},
    "attn": {"norm.weight": "norm.weight", "norm.bias": "norm.bias", "q.weight": "attn.to_q.weight",
             "q.bias": "attn.to_q.bias", "k.weight": "attn.to_k.weight", "k.bias": "attn.to_k.bias",
             "v.weight": "attn.to_v.weight", "v.bias": "attn.to_v.bias", "proj_out.weight": "attn.out_proj.weight",
             "proj_out.bias": "attn.out_proj.bias"},
    "norm": {"weight": "weight", "bias": "bias"},
}


def _kind(block: nn.Module) -> str:
    for cls, kind in ((AEKLResBlock, "res"), (AEKLDownsample, "down"), (Upsample, "up"),
                      (SpatialAttentionBlock, "attn"), (nn.GroupNorm, "norm"), (Convolution, "conv")):
        if isinstance(block, cls):
            return kind
    raise TypeError(f"unexpected autoencoder block {type(block).__name__}")


def _compvis_blocks(part: str, levels: int, res_blocks: int) -> Iterator[tuple[str, str]]:
    """(CompVis module prefix, kind) in forward order, as LDM's Encoder/Decoder build them."""
    mid = [("mid.block_1", "res"), ("mid.attn_1", "attn"), ("mid.block_2", "res")]
    yield "conv_in", "conv"
    if part == "encoder":
        for i in range(levels):
            yield from ((f"down.{i}.block.{j}", "res") for j in range(res_blocks))
            if i != levels - 1:
                yield f"down.{i}.downsample", "down"
        yield from mid
    else:
        yield from mid
        for i in reversed(range(levels)):
            yield from ((f"up.{i}.block.{j}", "res") for j in range(res_blocks + 1))
            if i != 0:
                yield f"up.{i}.upsample", "up"
    yield "norm_out", "norm"
    yield "conv_out", "conv"


def compvis_to_monai_keys(ae: AutoencoderKL, hp: dict[str, Any]) -> dict[str, str]:
    """MONAI key → CompVis key for every parameter of an LDM-shaped ``ae`` (except the quant convs)."""
    own = ae.state_dict()
    mapping: dict[str, str] = {}
    for part in ("encoder", "decoder"):
        blocks = list(getattr(ae, part).blocks)
        names = list(_compvis_blocks(part, len(hp["ae_channels"]), hp["ae_res_blocks"]))
        if [k for _, k in names] != [_kind(b) for b in blocks]:
            raise ValueError(f"sdseg: the MONAI {part} does not have the LDM block order")
        for n, (prefix, kind) in enumerate(names):
            for theirs, ours in _SUFFIXES[kind].items():
                if f"{part}.blocks.{n}.{ours}" in own:
                    mapping[f"{part}.blocks.{n}.{ours}"] = f"{part}.{prefix}.{theirs}"
    mapping["post_quant_conv.conv.weight"] = "post_quant_conv.weight"
    mapping["post_quant_conv.conv.bias"] = "post_quant_conv.bias"
    return mapping


def diffusers_to_compvis(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """Rename diffusers ``AutoencoderKL`` keys to CompVis ones (Linear attention weights stay 2-D)."""
    out = {}
    for key, value in state.items():
        k = key.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
        k = k.replace("mid_block.attentions.0.", "mid.attn_1.").replace("conv_norm_out.", "norm_out.")
        k = k.replace(".conv_shortcut.", ".nin_shortcut.").replace(".downsamplers.0.", ".downsample.")
        k = k.replace(".upsamplers.0.", ".upsample.")
        for theirs, ours in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                             ("to_out.0", "proj_out"), ("query", "q"), ("key", "k"), ("value", "v"),
                             ("proj_attn", "proj_out")):  # current and pre-0.14 diffusers attention names
            k = k.replace(f"mid.attn_1.{theirs}.", f"mid.attn_1.{ours}.")
        parts = k.split(".")
        if k.startswith("encoder.down_blocks."):
            k = ".".join(["encoder", "down", parts[2], *parts[3:]]).replace(".resnets.", ".block.")
        elif k.startswith("decoder.up_blocks."):  # diffusers counts up blocks in application order
            k = ".".join(["decoder", "up", str(levels - 1 - int(parts[2])), *parts[3:]]).replace(".resnets.", ".block.")
        out[k] = value
    return out


def compvis_to_monai(state: dict[str, torch.Tensor], ae: AutoencoderKL, hp: dict[str, Any],
                     source: str) -> dict[str, torch.Tensor]:
    """A state dict for the LDM-shaped ``ae`` from CompVis-named tensors; errors list what does not fit."""
    own = ae.state_dict()
    latent = hp["latent_channels"]
    state = {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}
    mapping = compvis_to_monai_keys(ae, hp)
    out: dict[str, torch.Tensor] = {}
    used = set()
    missing = []
    for ours, theirs in mapping.items():
        if theirs in state:
            out[ours], _ = state[theirs], used.add(theirs)
        else:
            missing.append(theirs)
    for key in ("quant_conv.weight", "quant_conv.bias"):
        if key not in state:
            missing.append(key)
            continue
        used.add(key)
        suffix = key.split(".")[-1]
        out[f"quant_conv_mu.conv.{suffix}"] = state[key][:latent]
        out[f"quant_conv_log_sigma.conv.{suffix}"] = state[key][latent:]
    unexpected = sorted(set(state) - used)
    wrong = []
    for k, v in list(out.items()):
        if v.shape != own[k].shape:
            if v.numel() == own[k].numel() and v.dim() != own[k].dim():  # 1x1 conv ↔ Linear attention weights
                out[k] = v.reshape(own[k].shape)
            else:
                wrong.append(f"{mapping.get(k, k)} {tuple(v.shape)} vs {tuple(own[k].shape)}")
    if missing or unexpected or wrong:
        raise SpecError(f"sdseg: ae_weights {source} does not fit the profile's autoencoder (ae_channels "
                        f"{hp['ae_channels']}, ae_res_blocks {hp['ae_res_blocks']}, latent_channels {latent}): "
                        f"{len(missing)} missing e.g. {missing[:3]}, {len(unexpected)} unexpected e.g. "
                        f"{unexpected[:3]}, {len(wrong)} with other shapes e.g. {wrong[:3]}")
    return {k: v.float() for k, v in out.items()}


# files ----------------------------------------------------------------------------------------
def read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a torch file, a ``.safetensors`` file or a diffusers ``save_pretrained`` folder,
    unwrapped from ``state_dict`` / ``modules.ae`` containers."""
    if path.is_dir():
        found = [path / n for n in _DIFFUSERS_FILES if (path / n).is_file()]
        if not found:
            raise SpecError(f"sdseg: ae_weights folder {path} has none of {_DIFFUSERS_FILES}")
        path = found[0]
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "modules", "ae"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SpecError(f"sdseg: ae_weights {path} is not a state dict of tensors")
    return state


def detect_layout(state: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """The layout of ``state`` and its autoencoder tensors (LDM's ``first_stage_model.`` prefix removed)."""
    prefixed = {k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")}
    if prefixed:
        return "compvis", prefixed
    keys = set(state)
    if any(k.startswith("encoder.blocks.") for k in keys):
        return "monai", state
    if any(k.startswith("encoder.down_blocks.") for k in keys):
        return "diffusers", state
    if any(k.startswith("encoder.down.") for k in keys) or "encoder.conv_in.weight" in keys:
        return "compvis", state
    raise SpecError(f"sdseg: ae_weights: cannot tell the key layout ({', '.join(LAYOUTS)}) from keys such as "
                    f"{sorted(keys)[:3]}")


def load_ae_weights(path: str | Path, hp: dict[str, Any]) -> LoadedAutoencoder:
    """Build the profile's autoencoder in the file's architecture and load the file into it (strict)."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"sdseg: hparam ae_weights: {path} does not exist (nothing is downloaded)")
    layout, state = detect_layout(read_state(path))
    if layout == "monai":
        ae = build_autoencoder(hp)
        own = ae.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or unexpected or wrong:
            raise SpecError(f"sdseg: ae_weights {path} (MONAI layout) does not match the profile's AutoencoderKL: "
                            f"{len(missing)} missing e.g. {missing[:3]}, {len(unexpected)} unexpected e.g. "
                            f"{unexpected[:3]}, {len(wrong)} with other shapes e.g. {wrong[:3]}")
    else:
        if layout == "diffusers":
            state = diffusers_to_compvis(state, len(hp["ae_channels"]))
        ae = build_ldm_autoencoder(hp)
        state = compvis_to_monai(state, ae, hp, str(path))
    ae.load_state_dict(state)
    return LoadedAutoencoder(ae, layout, _sha256(path))


def _sha256(path: Path) -> str:
    files = sorted(p for p in path.iterdir() if p.name in _DIFFUSERS_FILES) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]
