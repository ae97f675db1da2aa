"""SDSeg hyperparameters as plain data: the paper's configuration and a 2-core CPU ``tiny`` one.

``ae_*`` keys build and train the mask autoencoder (stage 1, ``ae_steps`` training steps, then
frozen); ``unet_*`` keys build the latent denoiser; the rest drive the latent diffusion stage.
"""

from __future__ import annotations

from typing import Any

from segarena.platform.plugin import Budget
from segarena.platform.search_space import Choice, LogUniform

PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {
        "batch_size": 4,  # images come at the dataset's size (task.image_size)
        # mask autoencoder, f = 4: 64 px → 4x16x16
        "ae_channels": [16, 32, 32], "ae_res_blocks": 1, "ae_attention": False, "ae_norm_groups": 8,
        "latent_channels": 4, "ae_steps": 80, "ae_lr": 1e-3, "ae_kl_weight": 1e-6, "ae_weights": None,
        # latent denoiser
        "unet_channels": [32, 64], "unet_res_blocks": 1, "unet_attention": [False, True], "unet_head_channels": 16,
        "unet_norm_groups": 8, "unet_resblock_updown": False,
        # diffusion stage
        "num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0155,
        "lr": 1e-3, "cond_lr_mult": 1.0, "weight_decay": 0.01, "warmup_steps": 0, "latent_loss_weight": 1.0,
        "cond_dropout": 0.0, "ema_decay": 0.95, "fusion": "mean",
    },
    "paper": {
        "batch_size": 4,
        # LDM KL-f8 layout: 256 px → 4x32x32 (trained on masks here: no hub download)
        "ae_channels": [128, 256, 512, 512], "ae_res_blocks": 2, "ae_attention": True, "ae_norm_groups": 32,
        "latent_channels": 4, "ae_steps": 20000, "ae_lr": 1e-4, "ae_kl_weight": 1e-6, "ae_weights": None,
        # LDM LSUN-Churches UNet: 192 x [1,2,2,4,4], attention at 32/16/8/4, 8 heads per level
        "unet_channels": [192, 384, 384, 768, 768], "unet_res_blocks": 2,
        "unet_attention": [True, True, True, True, False], "unet_head_channels": [24, 48, 48, 96, 96],
        "unet_norm_groups": 32, "unet_resblock_updown": True,
        # diffusion stage: AdamW 1e-5 x batch 4, 10k-step warm-up, EMA 0.9999 (flips: the harness, `augment: flips`)
        "num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0155,
        "lr": 4e-5, "cond_lr_mult": 1.0, "weight_decay": 0.01, "warmup_steps": 10000, "latent_loss_weight": 1.0,
        "cond_dropout": 0.2, "ema_decay": 0.9999, "fusion": "mean",
    },
}

BUDGETS: dict[str, list[Budget]] = {
    "tiny": [Budget(1, 1, "direct"), Budget(1, 2, "direct")],
    "paper": [Budget(1, 1, "direct"), Budget(10, 1, "ddim")],
}

SEARCH_SPACE: dict[str, Any] = {
    "lr": LogUniform(1e-5, 1e-3),
    "latent_loss_weight": Choice([0.5, 1.0, 2.0]),
    "cond_lr_mult": Choice([0.5, 1.0, 2.0]),
}
