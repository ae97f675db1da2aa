"""MedSegDiff plugin (Wu et al., MIDL 2023): the paper method with switches for the official code's
behaviours. Card: README.md in this folder."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from segarena.methods.common.ema import ParamEMA
from segarena.methods.common.ensemble import fuse, to_prob, to_signed
from segarena.methods.medsegdiff import diffusion
from segarena.methods.medsegdiff.condition import ConditionEncoder, ConditionFeatures
from segarena.methods.medsegdiff.denoiser import MedSegDenoiser
from segarena.methods.medsegdiff.profiles import BUDGETS, PROFILES, search_space
from segarena.platform.plugin import Budget, MethodPlugin, Prediction, Task, threshold_probs, unwrap

MASK_SCALES = ("pm1", "01")
FINAL_OUTPUTS = ("diffusion", "official_v1_mix")


class MedSegDiffMethod(MethodPlugin):
    name: ClassVar[str] = "medsegdiff"
    version: ClassVar[str] = "0.2.0"
    paper: ClassVar[str] = ("Wu, Fu, Fang, Zhang, Yang, Xiong, Liu, Xu. MedSegDiff: Medical Image Segmentation "
                            "with Diffusion Probabilistic Model. MIDL 2023")
    stochastic: ClassVar[bool] = True
    denoiser: ClassVar[str] = "denoiser"
    samplers: ClassVar[tuple[str, ...]] = diffusion.SAMPLERS  # what `diffusion.sample` accepts

    # read only when `cal_head` is on (off at tiny): the conformance read check cannot see them there
    conditional_keys: ClassVar[frozenset[str]] = frozenset({"cal_loss", "lambda_cal"})

    def __init__(self, hparams: dict[str, Any], task: Task) -> None:
        super().__init__(hparams, task)
        hp = self.hparams
        if hp["mask_scale"] not in MASK_SCALES:
            raise ValueError(f"mask_scale {hp['mask_scale']!r} not in {MASK_SCALES}")
        if hp["final_output"] not in FINAL_OUTPUTS:
            raise ValueError(f"final_output {hp['final_output']!r} not in {FINAL_OUTPUTS}")
        if hp["final_output"] == "official_v1_mix" and not hp["cal_head"]:
            raise ValueError("final_output 'official_v1_mix' needs cal_head")
        stages = sorted(hp["fusion_stages"])
        self.denoiser: nn.Module = MedSegDenoiser(
            task.num_classes, task.image_size, hp["model_channels"], hp["channel_mult"], hp["num_res_blocks"],
            hp["attention_resolutions"], hp["num_heads"], hp["norm_groups"], hp["dropout"], hp["scale_shift"],
            stages, hp["conditioning"], hp["ffparser_init"])
        self.condition: nn.Module = ConditionEncoder(
            task.in_channels, task.num_classes, hp["cond_base"], hp["cond_max"], hp["cond_stages"],
            self.denoiser.stage_channels(stages), hp["conditioning"], hp["cond_dropout"], hp["cond_norm"],
            image_in_channels=hp["model_channels"] if hp["concat_image"] else None, cal_head=hp["cal_head"])
        params = [*self.denoiser.parameters(), *self.condition.parameters()]
        self.opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
        self.scheduler = diffusion.training_scheduler(hp["timesteps"])
        self.ema = ParamEMA(hp.get("ema_decay", 0.0))  # sampling uses the averaged weights when > 0
        self.iteration = 0

    @classmethod
    def profiles(cls) -> dict[str, dict[str, Any]]:
        return {k: {**v, "channel_mult": list(v["channel_mult"])} for k, v in PROFILES.items()}

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        return search_space()

    @classmethod
    def budgets(cls, profile: str) -> list[Budget]:
        return list(BUDGETS.get(profile, BUDGETS["tiny"]))

    @classmethod
    def validate_hparams(cls, hparams: dict[str, Any]) -> None:
        super().validate_hparams(hparams)
        for key, choices in (("mask_scale", MASK_SCALES), ("final_output", FINAL_OUTPUTS)):
            if hparams.get(key) not in choices:
                raise ValueError(f"{key}: {hparams.get(key)!r} not in {choices}")
        if hparams["final_output"] == "official_v1_mix" and not hparams.get("cal_head"):
            raise ValueError("final_output: 'official_v1_mix' needs cal_head: true")
        if hparams["timesteps"] < 50:
            raise ValueError(f"timesteps: {hparams['timesteps']} < 50 (the rescaled linear beta needs T >= 50)")

    @classmethod
    def validate_budget(cls, budget: Budget, hparams: dict[str, Any]) -> None:
        super().validate_budget(budget, hparams)
        if budget.steps > hparams["timesteps"]:
            raise ValueError(f"{budget.steps} steps exceed the {hparams['timesteps']} timesteps it trains with")
        if budget.sampler == "ddpm" and budget.steps != hparams["timesteps"]:
            raise ValueError(f"DDPM samples all T = {hparams['timesteps']} steps, not {budget.steps}: use ddim")

    def modules(self) -> dict[str, nn.Module]:
        return {"denoiser": self.denoiser, "condition": self.condition}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt": self.opt}

    def extra_state(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "ema": self.ema.state()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.iteration = int(state.get("iteration", 0))
        self.ema.load(state.get("ema", {}))

    # mask <-> diffusion space ------------------------------------------------------------
    def encode_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return to_signed(mask) if self.hparams["mask_scale"] == "pm1" else mask.float()

    def decode_sample(self, x: torch.Tensor) -> torch.Tensor:
        return to_prob(x) if self.hparams["mask_scale"] == "pm1" else x.clamp(0, 1).float()

    # training ----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        image, mask = batch["image"], batch["mask"]
        x0 = self.encode_mask(mask)
        t = torch.randint(0, self.hparams["timesteps"], (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        cond = self.condition(image)
        eps = self.denoiser(self.scheduler.add_noise(x0, noise, t), t, cond)
        loss_eps = F.mse_loss(eps, noise)
        logs = {"loss_eps": loss_eps.item()}
        loss = loss_eps
        if cond.cal_logits is not None:
            loss_cal = self.calibration_loss(cond.cal_logits, mask)
            loss = loss + self.hparams["lambda_cal"] * loss_cal
            logs["loss_cal"] = loss_cal.item()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.ema.enabled:
            self.ema.update({"denoiser": unwrap(self.denoiser), "condition": unwrap(self.condition)})
        self.iteration += 1
        return {"loss": loss.item(), **logs}

    def calibration_loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Official: MSE on the sigmoid; ``bce`` = BCE + soft Dice."""
        prob = logits.sigmoid()
        if self.hparams["cal_loss"] == "mse":
            return F.mse_loss(prob, mask)
        inter = (prob * mask).sum((-2, -1))
        dice = 1 - (2 * inter + 1) / (prob.sum((-2, -1)) + mask.sum((-2, -1)) + 1)
        return F.binary_cross_entropy_with_logits(logits, mask) + dice.mean()

    # sampling ----------------------------------------------------------------------------
    def sample_members(self, cond: ConditionFeatures, members: int, noise: torch.Tensor, budget: Budget,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """All members as one batch: ``noise`` (E·B, C, H, W) member-major, ``cond`` computed for the B images."""
        tiled = cond.repeat(members)
        denoiser = self.ema.model("denoiser", unwrap(self.denoiser))
        return diffusion.sample(lambda x, t: denoiser(x, t, tiled), noise, budget, self.hparams["timesteps"],
                                generator)

    def predict(self, images: torch.Tensor, budget: Budget, generator: torch.Generator | None = None) -> Prediction:
        e, b = budget.ensemble, images.shape[0]
        c, (h, w) = self.task.num_classes, images.shape[-2:]
        noise = torch.randn((e * b, c, h, w), generator=generator,
                            device=generator.device if generator is not None else images.device).to(images.device)
        cond = self.ema.model("condition", unwrap(self.condition))(images)  # once per image, for every step and member
        x = self.sample_members(cond, e, noise, budget, _device_generator(generator, images.device))
        member_probs = self.decode_sample(x).view(e, b, c, h, w)
        if self.hparams["final_output"] == "official_v1_mix":
            member_probs = official_v1_mix(member_probs, cond.cal_logits.sigmoid())
        probs, mask = self.fuse(member_probs)
        if self.task.exclusive and c > 1:
            members = torch.stack([threshold_probs(p, True) for p in member_probs])
        else:
            members = member_probs > 0.5
        return Prediction(probs=probs, mask=mask, nfe=budget.nfe, members=members,
                          extra_calls={"condition": 1}, member_probs=member_probs)

    def fuse(self, member_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ensemble_fusion`` of (E, B, C, H, W) member probabilities; argmax with background if exclusive."""
        how = self.hparams["ensemble_fusion"]
        if how == "official_sq":  # official `staple()`: mean_i(s_i · m) with m the member mean = m²
            probs = member_probs.mean(0) ** 2
            mask = probs > 0.5
        else:
            probs, mask = fuse(member_probs, how)
        if self.task.exclusive and member_probs.shape[2] > 1:
            mask = threshold_probs(probs, True)
        return probs.clamp(0, 1), mask


def official_v1_mix(sample: torch.Tensor, cal: torch.Tensor) -> torch.Tensor:
    """Official V1 output: dice(sample > ½, cal > ½) < 0.65 → cal + ¼·sample, else ½·cal + ½·sample, clamped."""
    s, c = sample > 0.5, (cal > 0.5).expand_as(sample)
    dims = (-2, -1)  # per member, image and class
    dice = (2 * (s & c).sum(dims) + 1e-6) / (s.sum(dims) + c.sum(dims) + 1e-6)
    low = (dice < 0.65)[..., None, None]
    return torch.where(low, cal + 0.25 * sample, 0.5 * cal + 0.5 * sample).clamp(0, 1)


def _device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """A generator on ``device`` for the DDPM step noise, seeded from ``generator`` (deterministic)."""
    if generator is None or generator.device == device:
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=device).manual_seed(seed)
