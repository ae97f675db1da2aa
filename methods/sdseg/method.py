"""SDSeg plugin: latent diffusion on masks with a single-step reverse process (Lin et al., MICCAI 2024).

Two stages inside one run, counted by ``training_step``: (1) the mask autoencoder trains for
``ae_steps`` steps (skipped when ``ae_weights`` gives local pretrained weights), then is frozen; (2) at
the first diffusion step the condition encoder is initialised from the autoencoder's encoder and
the latent scale factor is measured (1/std of the batch's mask latents); both stage and scale
factor are checkpointed through ``extra_state``. Multi-class tasks use one class-conditioned
denoiser, one class per sample in training and one pass per class at inference (nfe x classes).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from segarena.methods.common.ema import ParamEMA
from segarena.methods.common.ensemble import fuse
from segarena.methods.sdseg.ae_weights import load_ae_weights
from segarena.methods.sdseg.autoencoder import ae_loss, ae_output_to_probs, build_autoencoder, masks_to_ae_input
from segarena.methods.sdseg.condition import ConditionEncoder
from segarena.methods.sdseg.latent import (
    SAMPLERS,
    build_denoiser,
    build_scheduler,
    estimate_clean_latent,
    sample_direct,
    sample_multistep,
)
from segarena.methods.sdseg.profiles import BUDGETS, PROFILES, SEARCH_SPACE
from segarena.platform.plugin import Budget, MethodPlugin, Prediction, Task, threshold_probs, unwrap

AE_STAGE, DIFFUSION_STAGE = 1, 2


class SDSegMethod(MethodPlugin):
    name: ClassVar[str] = "sdseg"
    version: ClassVar[str] = "0.2.0"
    paper: ClassVar[str] = ("Lin, Chen, Yan, Yu, Zheng. Stable Diffusion Segmentation for Biomedical Images with "
                            "Single-step Reverse Process. MICCAI 2024")
    stochastic: ClassVar[bool] = True
    paper_augment: ClassVar[str] = "flips"  # the official random h/v flips, now applied by the harness (`augment:`)
    denoiser: ClassVar[str] = "unet"
    # read only by latent-diffusion steps (stage 2), which a short check never reaches at the tiny ae_steps
    conditional_keys: ClassVar[frozenset[str]] = frozenset({"latent_loss_weight", "warmup_steps"})
    samplers: ClassVar[tuple[str, ...]] = SAMPLERS  # what `predict` accepts (`latent.SAMPLERS`)

    def __init__(self, hparams: dict[str, Any], task: Task) -> None:
        super().__init__(hparams, task)
        hp = self.hparams
        loaded = load_ae_weights(hp["ae_weights"], hp) if hp.get("ae_weights") else None
        self.ae = loaded.ae if loaded else build_autoencoder(hp)
        self.ae_source = {"layout": loaded.layout, "sha256": loaded.sha256} if loaded else None
        self.cond = ConditionEncoder(self.ae.encoder, task.in_channels, hp["latent_channels"], hp["cond_dropout"])
        self.unet = build_denoiser(hp, hp["latent_channels"], task.num_classes)
        self.scheduler = build_scheduler(hp)
        self.ae_opt = torch.optim.AdamW(self.ae.parameters(), lr=hp["ae_lr"])
        self.opt = torch.optim.AdamW(
            [{"params": self.unet.parameters(), "lr": hp["lr"]},
             {"params": self.cond.parameters(), "lr": hp["lr"] * hp["cond_lr_mult"]}],
            weight_decay=hp["weight_decay"])
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.ema = ParamEMA(hp["ema_decay"])
        self.step = 0
        self.stage = AE_STAGE
        self.diffusion_start = 0  # step at which stage 2 began (warm-up counts from it)
        self.scale_factor = 1.0  # identity until measured, so predict works at any stage
        self.scale_measured = False
        if loaded:  # the paper's premise: frozen pretrained AE, condition encoder initialised from its encoder
            self._freeze_autoencoder()

    @classmethod
    def profiles(cls) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in PROFILES.items()}

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        return dict(SEARCH_SPACE)

    @classmethod
    def budgets(cls, profile: str) -> list[Budget]:
        return list(BUDGETS.get(profile, BUDGETS["tiny"]))

    @classmethod
    def validate_budget(cls, budget: Budget, hparams: dict[str, Any]) -> None:
        super().validate_budget(budget, hparams)
        if budget.steps > hparams["num_train_timesteps"]:
            raise ValueError(f"{budget.steps} steps exceed the {hparams['num_train_timesteps']} training timesteps")

    def card_tags(self) -> dict[str, str]:
        """Rows trained without pretrained parts say so (the paper's AE is a pretrained KL-f8, its UNet
        starts from LSUN-Churches: neither is here unless ``ae_weights`` is given)."""
        if self.ae_source is None:
            return {"pretrained": "none"}
        return {"pretrained": "autoencoder", "ae_weights_layout": self.ae_source["layout"],
                "ae_weights_sha256": self.ae_source["sha256"], "unet_init": "scratch"}

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"ae": self.ae, "cond": self.cond, "unet": self.unet}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"ae_opt": self.ae_opt, "opt": self.opt}

    # state -----------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"step": self.step, "stage": self.stage, "diffusion_start": self.diffusion_start,
                "scale_factor": self.scale_factor,
                "scale_measured": self.scale_measured, "ema": self.ema.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        self.stage = int(state.get("stage", AE_STAGE))
        self.diffusion_start = int(state.get("diffusion_start", 0))
        self.scale_factor = float(state.get("scale_factor", 1.0))
        self.scale_measured = bool(state.get("scale_measured", False))
        self.ema.load(state.get("ema", {}))
        if self.stage == DIFFUSION_STAGE:
            unwrap(self.ae).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> SDSegMethod:
        super().train(mode)
        if self.stage == DIFFUSION_STAGE:
            self.ae.eval()  # frozen autoencoder stays in eval mode
        return self

    # training --------------------------------------------------------------------------
    def _freeze_autoencoder(self) -> None:
        """End of stage 1: freeze the autoencoder and start the condition encoder from its encoder."""
        ae = unwrap(self.ae)
        ae.requires_grad_(False).eval()
        unwrap(self.cond).init_from(ae.encoder)
        self.stage = DIFFUSION_STAGE
        self.diffusion_start = self.step

    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        image, mask = batch["image"], batch["mask"]
        stage = self.stage
        logs = self._autoencoder_step(mask) if stage == AE_STAGE else self._diffusion_step(image, mask)
        self.step += 1
        if stage == AE_STAGE and self.step >= self.hparams["ae_steps"]:
            self._freeze_autoencoder()
        return {**logs, "stage": float(stage)}

    def _autoencoder_step(self, mask: torch.Tensor) -> dict[str, float]:
        x = masks_to_ae_input(mask.flatten(0, 1))  # every class channel is a binary mask
        loss, logs = ae_loss(self.ae, x, self.hparams["ae_kl_weight"])
        self.ae_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.ae_opt.step()
        return logs

    def _diffusion_step(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        hp = self.hparams
        labels = _pick_classes(mask) if self.task.num_classes > 1 else None
        target = mask[torch.arange(mask.shape[0], device=mask.device), labels if labels is not None else 0]
        with torch.no_grad():
            z0 = unwrap(self.ae).encode_stage_2_inputs(masks_to_ae_input(target))
            if not self.scale_measured:  # official scale_by_std: first diffusion batch, once
                self.scale_factor = float(1.0 / z0.flatten().std().clamp_min(1e-6))
                self.scale_measured = True
            z0 = z0 * self.scale_factor
        noise = torch.randn_like(z0)
        t = torch.randint(0, self.scheduler.num_train_timesteps, (z0.shape[0],), device=z0.device)
        z_t = self.scheduler.add_noise(z0, noise, t)
        eps = self.unet(torch.cat([z_t, self.cond(image)], 1), t, class_labels=labels)
        z0_hat = estimate_clean_latent(self.scheduler.alphas_cumprod, z_t, eps, t)
        loss_eps = F.l1_loss(eps, noise)
        loss_z0 = F.l1_loss(z0_hat, z0)
        loss = loss_eps + hp["latent_loss_weight"] * loss_z0
        warm = self._warmup()
        for group, base in zip(self.opt.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * warm
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.ema.enabled:
            self.ema.update({"unet": unwrap(self.unet)})  # official LitEma: the UNet only, not the encoder
        return {"loss": loss.item(), "loss_eps": loss_eps.item(), "loss_z0": loss_z0.item(),
                "lr": self.opt.param_groups[0]["lr"], "scale_factor": self.scale_factor}

    def _warmup(self) -> float:
        """Official LambdaLinearScheduler: linear from 1e-6 to 1 over ``warmup_steps``, then constant."""
        n = self.hparams["warmup_steps"]
        done = self.step - self.diffusion_start
        return 1.0 if n <= 0 or done >= n else 1e-6 + (1 - 1e-6) * done / n

    # inference -------------------------------------------------------------------------
    def predict(self, images: torch.Tensor, budget: Budget, generator: torch.Generator | None = None) -> Prediction:
        e, (b, c) = budget.ensemble, (images.shape[0], self.task.num_classes)
        unet = self.ema.model("unet", unwrap(self.unet))
        cimg = unwrap(self.cond)(images)
        n = e * b * c  # rows ordered (member, image, class): one batch for the whole ensemble
        condition = cimg[None, :, None].expand(e, -1, c, -1, -1, -1).reshape(n, *cimg.shape[1:])
        labels = torch.arange(c, device=images.device).repeat(e * b) if c > 1 else None

        def denoise(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            x = torch.cat([z, condition], 1)
            kwargs = {"class_labels": labels}
            return unet(x, t, **kwargs)

        if budget.sampler not in SAMPLERS:
            raise ValueError(f"sdseg: unknown sampler {budget.sampler!r} {SAMPLERS}")
        gen_device = generator.device if generator is not None else images.device
        z_T = torch.randn((n, *cimg.shape[1:]), generator=generator, device=gen_device).to(images.device)
        if budget.sampler == "direct":
            if budget.steps != 1:
                raise ValueError(f"sdseg: the direct sampler takes exactly one step, not {budget.steps}")
            z0 = sample_direct(denoise, z_T, self.scheduler.alphas_cumprod)
        else:
            z0 = sample_multistep(denoise, z_T, self.hparams, budget.sampler, budget.steps,
                                  _on_device(generator, images.device))
        decoded = unwrap(self.ae).decode_stage_2_outputs(z0 / self.scale_factor)
        member_probs = ae_output_to_probs(decoded).view(e, b, c, *images.shape[-2:])
        probs, mask = self.fuse(member_probs)
        exclusive = self.task.exclusive and c > 1
        members = threshold_probs(member_probs.flatten(0, 1), True).view_as(member_probs) if exclusive \
            else member_probs > 0.5
        return Prediction(probs=probs, mask=mask, nfe=budget.nfe * c, members=members,
                          extra_calls={"decoder": e * c, "condition_encoder": 1}, member_probs=member_probs)

    def fuse(self, member_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``fusion`` of (E, B, C, H, W) member probabilities; argmax with background if exclusive."""
        probs, mask = fuse(member_probs, self.hparams["fusion"])
        if self.task.exclusive and member_probs.shape[2] > 1:
            mask = threshold_probs(probs, True)
        return probs, mask


def _pick_classes(mask: torch.Tensor) -> torch.Tensor:
    """One class per sample, uniformly among the classes present (any class when none is)."""
    present = mask.flatten(2).amax(2) > 0
    weights = torch.where(present.any(1, keepdim=True), present.float(), torch.ones_like(present, dtype=torch.float))
    return torch.multinomial(weights, 1).squeeze(1)



def _on_device(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` for the ancestral noise, seeded from ``generator`` (deterministic)."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)
