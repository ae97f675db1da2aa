"""MedSegDiff profiles, budgets and search space as plain data.

``paper`` is MedSegDiff-B as in the official README command (116,302,945 parameters at 256 px for a
1-channel image and 1 class: denoiser 115,029,505 incl. FF-Parser weights, condition branch 1,273,440);
``tiny`` is a 2-core-CPU model (306,953 parameters at 64 px) that keeps every switch of the paper model.
Measured with ``MedSegDiffMethod(...).num_parameters()`` (tests/test_medsegdiff.py checks them).
``concat_image`` stays off in both: the paper feeds the image through the fusion only; the official
code also concatenates it at the first conv (``OFFICIAL_SWITCHES``; +9·C_image·model_channels weights).
"""

from __future__ import annotations

from typing import Any

from segarena.platform.plugin import Budget
from segarena.platform.search_space import Choice, LogUniform

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "model_channels": 16, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
        "attention_resolutions": [], "num_heads": 1, "norm_groups": 8, "dropout": 0.0, "scale_shift": False,
        "cond_base": 8, "cond_max": 32, "cond_stages": 3, "cond_dropout": 0.0, "cond_norm": "instance",
        "conditioning": "paper", "fusion_stages": [1], "ffparser_init": "identity", "concat_image": False,
        "cal_head": False, "lambda_cal": 10.0, "cal_loss": "mse", "final_output": "diffusion",
        "timesteps": 100, "mask_scale": "pm1", "ensemble_fusion": "mean",
        "lr": 1e-3, "weight_decay": 0.0, "batch_size": 2,
        "ema_decay": 0.95,  # a short memory for runs of a few hundred steps (measured: steadier Dice than 0 or 0.99)
    },
    "paper": {
        "model_channels": 128, "channel_mult": [1, 1, 2, 2, 4, 4], "num_res_blocks": 2,
        "attention_resolutions": [16], "num_heads": 1, "norm_groups": 32, "dropout": 0.0, "scale_shift": False,
        "cond_base": 32, "cond_max": 480, "cond_stages": 5, "cond_dropout": 0.5, "cond_norm": "batch",
        "conditioning": "paper", "fusion_stages": [2, 3], "ffparser_init": "official", "concat_image": False,
        "cal_head": False, "lambda_cal": 10.0, "cal_loss": "mse", "final_output": "diffusion",
        "timesteps": 1000, "mask_scale": "pm1", "ensemble_fusion": "mean",
        "lr": 1e-4, "weight_decay": 0.0, "batch_size": 8,
        "ema_decay": 0.9999,  # the official rate
    },
}

# The official code's behaviour where segarena deviates on purpose (card: README.md).
OFFICIAL_SWITCHES: dict[str, Any] = {
    "conditioning": "official_gate", "ffparser_init": "official", "concat_image": True, "cal_head": True,
    "cal_loss": "mse", "lambda_cal": 10.0, "mask_scale": "01", "final_output": "official_v1_mix",
    "ensemble_fusion": "official_sq", "cond_dropout": 0.5, "cond_norm": "batch",
}

BUDGETS: dict[str, list[Budget]] = {
    "tiny": [Budget(steps=5, ensemble=1, sampler="ddim"), Budget(steps=10, ensemble=1, sampler="ddim"),
             Budget(steps=5, ensemble=3, sampler="ddim")],
    "paper": [Budget(steps=10, ensemble=1, sampler="ddim"), Budget(steps=50, ensemble=1, sampler="ddim"),
              Budget(steps=50, ensemble=5, sampler="ddim"), Budget(steps=100, ensemble=5, sampler="ddim"),
              Budget(steps=100, ensemble=25, sampler="ddim"), Budget(steps=1000, ensemble=5, sampler="ddpm")],
}


def search_space() -> dict[str, Any]:
    """Learning rate plus the fusion/FF-Parser switches worth tuning (tune at DDIM 10 x 1)."""
    return {
        "lr": LogUniform(2e-5, 2e-3),
        "conditioning": Choice(["paper", "official_gate"]),
        "ffparser_init": Choice(["identity", "official"]),
        "dropout": Choice([0.0, 0.1]),
        "cal_head": Choice([False, True]),
    }
