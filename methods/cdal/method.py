"""cDAL plugin: few-step conditional diffusion GAN with spatial attention and latent embedding.

Card: README.md in this folder. One ``training_step`` = the D update (non-saturating softplus loss,
lazy R1) then the G update (MSE to the clean mask on the attention-weighted input, plus
``adv_weight_g`` x softplus(-D(fake)), 0 as released). ``predict`` runs T posterior steps with a
fresh z per step, the E ensemble members as one batch: nfe = T x E generator rows per image.
"""

from __future__ import annotations

import math
from collections import ChainMap
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from segarena.methods.cdal.attention import spatial_attention
from segarena.methods.cdal.discriminator import TimeCondDiscriminator
from segarena.methods.cdal.generator import CDALGenerator
from segarena.methods.cdal.schedule import VPSchedule, randn
from segarena.methods.common.ensemble import fuse, to_prob, to_signed
from segarena.platform.plugin import Budget, MethodPlugin, Prediction, Task, unwrap
from segarena.platform.search_space import Choice, LogUniform

LR_SCHEDULES = ("constant", "cosine")
# lr_*: the released CosineAnnealingLR(T_max=500 epochs, eta_min=1e-5) on both optimizers, stepped once per
# epoch; a plugin sees steps, so an epoch is `lr_epoch_steps` training steps (MoNuSeg: 30 images / batch 4 → 8).
_COMMON: dict[str, Any] = {"beta_min": 0.1, "beta_max": 20.0, "betas": [0.5, 0.9], "r1_gamma": 1.0,
                           "adv_weight_g": 0.0, "attn_norm": "none", "resample": "fir", "dropout": 0.0,
                           "fusion": "mean", "lr_schedule": "constant", "lr_t_max": 500, "lr_eta_min": 1e-5,
                           "lr_epoch_steps": 8}
_MONUSEG: dict[str, Any] = {
    **_COMMON, "T": 4, "nf": 64, "ch_mult": [1, 1, 1, 2, 2, 4, 4], "num_res_blocks": 2,
    "attn_resolutions": [16, 8], "enc_layers": 5, "enc_blocks": 1, "nz": 100, "z_emb": 256, "n_mlp": 3,
    "t_emb": 256, "d_ngf": 64, "d_init_std": 0.02, "d_mult": [4, 8, 8, 8, 8, 8], "attn_level": 3, "batch_size": 4,
    "lr_g": 2e-4, "lr_d": 1e-4, "lazy_reg": 10, "lr_schedule": "cosine"}
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {**_COMMON, "T": 2, "nf": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1,
             "attn_resolutions": [16], "enc_layers": 1, "enc_blocks": 1, "nz": 16, "z_emb": 32, "n_mlp": 1,
             "t_emb": 32, "d_ngf": 8, "d_init_std": 0.0, "d_mult": [2, 4, 4], "attn_level": 1, "batch_size": 2,
             "lr_g": 1e-3, "lr_d": 5e-4, "lazy_reg": 4},
    "paper": _MONUSEG,
    "paper_cxr": {**_MONUSEG, "T": 2, "nf": 32, "ch_mult": [1, 1, 2, 2, 4, 4], "num_res_blocks": 1,
                  "attn_resolutions": [16], "enc_layers": 3, "enc_blocks": 2, "attn_level": 2, "batch_size": 3,
                  "lr_d": 1e-5, "lazy_reg": 1,
                  "lr_epoch_steps": 189},  # Shenzhen's 566 masked images / batch 3 (fold 0 trains on Shenzhen)
}
# Inference budgets per profile (majority votes over E posterior samples): budget data, not hyperparameters,
# so that adding an ensemble size evaluates the stored weights instead of retraining.
ENSEMBLES: dict[str, list[int]] = {"tiny": [1, 3], "paper": [1, 5], "paper_cxr": [1, 5, 30]}
# `t_emb` is the discriminator's time width; the generator's is 4·nf (NCSN++).
_GEN_KEYS = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "enc_layers", "enc_blocks", "nz", "z_emb",
             "n_mlp", "dropout", "resample")


@contextmanager
def frozen(module: nn.Module):
    """Keep ``module``'s parameters out of the autograd graph (D during the G update)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class CDALMethod(MethodPlugin):
    name: ClassVar[str] = "cdal"
    version: ClassVar[str] = "0.2.0"  # 0.2: input pyramid fix, D head, G time width, cosine lr
    paper: ClassVar[str] = ("Hejrati, Banerjee, Glide-Hurst, Dong. Conditional diffusion model with spatial "
                            "attention and latent embedding for medical image segmentation. MICCAI 2024")
    stochastic: ClassVar[bool] = True
    # read only under the cosine schedule (off at tiny)
    conditional_keys: ClassVar[frozenset[str]] = frozenset({"lr_t_max", "lr_eta_min", "lr_epoch_steps"})
    denoiser: ClassVar[str] = "generator"
    headline_loss: ClassVar[str | None] = "g_mse"  # the generator's x0 loss; d_* are discriminator terms
    paper_augment: ClassVar[str] = "default"  # MoNuSeg script: flips, RandomAffine(22°, 0.75-1.25), ColorJitter
    samplers: ClassVar[tuple[str, ...]] = ("posterior",)  # T posterior-sampling steps, T fixed by training

    def __init__(self, hparams: dict[str, Any], task: Task) -> None:
        super().__init__(hparams, task)
        # defaults for keys a caller left out, read through (not copied), so the conformance check sees reads
        self.hparams = hp = ChainMap(self.hparams, _COMMON)
        if hp["lr_schedule"] not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule {hp['lr_schedule']!r} not in {LR_SCHEDULES}")
        # exclusive multi-class: one-hot with background, as the released Hippocampus setup
        self.one_hot = task.exclusive and task.num_classes > 1
        self.label_channels = task.num_classes + int(self.one_hot)
        self.schedule = VPSchedule(int(hp["T"]), hp["beta_min"], hp["beta_max"])
        self.generator: nn.Module = CDALGenerator(self.label_channels, task.in_channels, task.image_size[0],
                                                  **{k: hp[k] for k in _GEN_KEYS})
        self.discriminator: nn.Module = TimeCondDiscriminator(self.label_channels, ngf=hp["d_ngf"],
                                                              d_mult=hp["d_mult"], t_emb=hp["t_emb"],
                                                              resample=hp["resample"],
                                                              init_std=hp["d_init_std"])
        betas = tuple(hp["betas"])
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=hp["lr_g"], betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=hp["lr_d"], betas=betas)
        self.iteration = 0

    # plugin metadata -------------------------------------------------------------------
    @classmethod
    def profiles(cls) -> dict[str, dict[str, Any]]:
        return {k: {n: list(v) if isinstance(v, list) else v for n, v in p.items()} for k, p in PROFILES.items()}

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        return {"lr_g": LogUniform(5e-5, 1e-3), "lr_d": LogUniform(1e-5, 5e-4), "r1_gamma": LogUniform(0.1, 10.0),
                "attn_level": Choice([1, 2, 3]), "nz": Choice([16, 50, 100])}

    @classmethod
    def budgets(cls, profile: str) -> list[Budget]:
        p = PROFILES[profile]
        return [Budget(steps=p["T"], ensemble=e, sampler="posterior") for e in ENSEMBLES[profile]]

    @classmethod
    def validate_hparams(cls, hparams: dict[str, Any]) -> None:
        super().validate_hparams(hparams)
        schedule = ChainMap(hparams, _COMMON)["lr_schedule"]
        if schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: {schedule!r} not in {LR_SCHEDULES}")

    @classmethod
    def validate_budget(cls, budget: Budget, hparams: dict[str, Any]) -> None:
        super().validate_budget(budget, hparams)
        if budget.steps != int(hparams["T"]):
            raise ValueError(f"cDAL samples with the T={hparams['T']} steps it trains with, not {budget.steps}")

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def extra_state(self) -> dict[str, Any]:
        return {"iteration": self.iteration}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.iteration = int(state.get("iteration", 0))

    # pieces (public so tests and ablations reach them) ---------------------------------
    def target(self, mask: torch.Tensor) -> torch.Tensor:
        """Masks (B, C, H, W) in {0, 1} → diffusion labels in [-1, 1] (background channel first if one-hot)."""
        if self.one_hot:
            mask = torch.cat([1 - mask.amax(1, keepdim=True), mask], 1)
        return to_signed(mask)

    def latent(self, rows: int, like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return randn((rows, self.hparams["nz"]), like, generator)

    def random_t(self, rows: int, device: torch.device) -> torch.Tensor:
        return torch.randint(0, self.schedule.steps, (rows,), device=device)

    @torch.no_grad()
    def attention_map(self, x_t: torch.Tensor, t: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) spatial attention from D's features at ``attn_level`` (no gradient)."""
        feats = unwrap(self.discriminator).features(x_t, t, x_next)
        return spatial_attention(feats, self.hparams["attn_level"], tuple(x_t.shape[-2:]), self.hparams["attn_norm"])

    def generator_input(self, x0: torch.Tensor, t: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_{t+1} of attn ⊙ x0, attn): a real pair feeds D's features, the weighted mask is re-noised."""
        x_t, x_next = self.schedule.q_sample_pairs(x0, t, generator=generator)
        attn = self.attention_map(x_t, t, x_next)
        return self.schedule.q_sample_pairs(attn * x0, t, generator=generator)[1], attn

    def r1_penalty(self, x_t: torch.Tensor, t: torch.Tensor, x_next: torch.Tensor,
                   logits: torch.Tensor | None = None) -> torch.Tensor:
        """(gamma/2)·E‖∇_{x_t} D(x_t, t, x_{t+1})‖² on real pairs (``x_t`` must require grad)."""
        if logits is None:
            logits = self.discriminator(x_t, t, x_next)
        (grad,) = torch.autograd.grad(logits.sum(), x_t, create_graph=True)
        return self.hparams["r1_gamma"] / 2 * grad.flatten(1).pow(2).sum(1).mean()

    def learning_rates(self, iteration: int) -> tuple[float, float]:
        """(lr_G, lr_D) at ``iteration``: constant, or the closed form of CosineAnnealingLR at epoch
        iteration // lr_epoch_steps (periodic past T_max, as torch's scheduler keeps stepping)."""
        hp = self.hparams
        if hp["lr_schedule"] == "constant":
            return hp["lr_g"], hp["lr_d"]
        epoch = iteration // max(1, int(hp["lr_epoch_steps"]))
        cos = (1 + math.cos(math.pi * epoch / hp["lr_t_max"])) / 2
        eta = hp["lr_eta_min"]
        return eta + (hp["lr_g"] - eta) * cos, eta + (hp["lr_d"] - eta) * cos

    # training --------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        x0, image = self.target(batch["mask"]), batch["image"]
        lr_g, lr_d = self.learning_rates(self.iteration)
        for opt, lr in ((self.opt_g, lr_g), (self.opt_d, lr_d)):
            for group in opt.param_groups:
                group["lr"] = lr
        logs = self._step_d(x0, image)
        logs.update(self._step_g(x0, image))
        self.iteration += 1
        return logs | {"lr_g": lr_g, "lr_d": lr_d}

    def _step_d(self, x0: torch.Tensor, image: torch.Tensor) -> dict[str, float]:
        b = x0.shape[0]
        t = self.random_t(b, x0.device)
        x_t, x_next = self.schedule.q_sample_pairs(x0, t)
        x_t.requires_grad_(True)
        real = self.discriminator(x_t, t, x_next)
        loss = F.softplus(-real).mean()
        r1 = torch.zeros((), device=x0.device)
        if self.hparams["r1_gamma"] > 0 and self.iteration % max(1, int(self.hparams["lazy_reg"])) == 0:
            r1 = self.r1_penalty(x_t, t, x_next, real)
        with torch.no_grad():
            x0_hat = self.generator(x_next, t, image, self.latent(b, x0))
            fake_t = self.schedule.posterior_sample(x0_hat, x_next, t)
        fake = self.discriminator(fake_t, t, x_next)
        loss_fake = F.softplus(fake).mean()
        self.opt_d.zero_grad(set_to_none=True)
        (loss + loss_fake + r1).backward()
        self.opt_d.step()
        return {"d_real": loss.item(), "d_fake": loss_fake.item(), "r1": r1.item()}

    def _step_g(self, x0: torch.Tensor, image: torch.Tensor) -> dict[str, float]:
        b = x0.shape[0]
        t = self.random_t(b, x0.device)
        x_next, attn = self.generator_input(x0, t)
        x0_hat = self.generator(x_next, t, image, self.latent(b, x0))
        mse = F.mse_loss(x0_hat, x0)
        loss, logs = mse, {"g_mse": mse.item(), "attn_mean": attn.mean().item()}
        weight = self.hparams["adv_weight_g"]
        if weight > 0:
            with frozen(self.discriminator):
                fake = self.discriminator(self.schedule.posterior_sample(x0_hat, x_next, t), t, x_next)
            adv = F.softplus(-fake).mean()
            loss = loss + weight * adv
            logs["g_adv"] = adv.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        return logs

    # inference -------------------------------------------------------------------------
    def sample(self, images: torch.Tensor, steps: int, ensemble: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T ~ N(0, I) → T posterior steps, members batched: (E, B, C', H, W) in [-1, 1]."""
        if steps != self.schedule.steps:
            raise ValueError(f"cDAL samples with the T={self.schedule.steps} it was trained with, not {steps}")
        b = images.shape[0]
        cond = images.repeat(ensemble, 1, 1, 1)
        x = randn((ensemble * b, self.label_channels, *images.shape[-2:]), images, generator)
        for i in reversed(range(steps)):
            t = torch.full((ensemble * b,), i, dtype=torch.long, device=images.device)
            x0_hat = self.generator(x, t, cond, self.latent(ensemble * b, images, generator))
            x = self.schedule.posterior_sample(x0_hat, x, t, generator)
        return x.view(ensemble, b, *x.shape[1:])

    def predict(self, images: torch.Tensor, budget: Budget, generator: torch.Generator | None = None) -> Prediction:
        member_probs = to_prob(self.sample(images, budget.steps, budget.ensemble, generator))
        if self.one_hot:  # argmax over background + classes, per member and of the mean
            members = _one_hot_argmax(member_probs, 2)[:, :, 1:]
            probs, mask = member_probs.mean(0)[:, 1:], _one_hot_argmax(member_probs.mean(0), 1)[:, 1:]
            member_probs = member_probs[:, :, 1:]
        else:
            members = member_probs > 0.5
            probs, mask = self.fuse(member_probs)
        return Prediction(probs=probs, mask=mask, nfe=budget.nfe, members=members, member_probs=member_probs)

    def fuse(self, member_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``fusion`` of (E, B, C, H, W) member probabilities. One-hot mode also needs the background
        channel, which members carry but ``member_probs`` (foreground only) does not."""
        if self.one_hot:
            raise NotImplementedError("one-hot cDAL fuses with its background channel")
        return fuse(member_probs, self.hparams["fusion"])


def _one_hot_argmax(probs: torch.Tensor, dim: int) -> torch.Tensor:
    labels = probs.argmax(dim, keepdim=True)
    return torch.zeros_like(probs, dtype=torch.bool).scatter_(dim, labels, True)
