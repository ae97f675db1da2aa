"""The method plugin contract (docs/contracts.md): what a lab implements, frozen by ``API_VERSION``.

Plugins never import Ray or MLflow. The harness owns devices, DDP wrapping, data loading,
checkpoints, logging, evaluation and timing; a plugin owns its networks, losses and sampling.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from segarena.platform.api import API_VERSION
from segarena.platform.records import Budget, Task

__all__ = ["API_VERSION", "Budget", "MethodPlugin", "Prediction", "Task", "threshold_probs", "unwrap"]


@dataclass
class Prediction:
    """Typed output of ``predict``.

    probs: foreground probabilities in [0, 1], (B, C, H, W).
    mask: the method's hard mask (it owns binarisation/fusion), (B, C, H, W), bool.
    nfe: denoiser forward passes per image for this call.
    members: hard masks of each ensemble member (E, B, C, H, W) for stochastic methods.
    extra_calls: other network passes per image counted separately (e.g. ``{"decoder": 1}``); logged
        per budget as the metrics ``extra_calls/<network>`` (from the batch-1 timing runs).
    member_probs: foreground probabilities of each member (E, B, C, H, W), the input of ``fuse``:
        lets the harness score smaller ensembles on prefixes of the members and measure entropy.
    """

    probs: torch.Tensor
    mask: torch.Tensor
    nfe: int
    members: torch.Tensor | None = None
    extra_calls: dict[str, int] = field(default_factory=dict)
    member_probs: torch.Tensor | None = None


class MethodPlugin(ABC):
    """Base class of every segmentation method.

    Subclasses set the class attributes and implement the abstract methods. ``modules()``
    names attributes of ``self``: the harness may replace them in place (device move, DDP
    wrapping), so always reach networks through ``self.<name>``.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "0.1.0"
    paper: ClassVar[str] = ""
    api_version: ClassVar[int] = API_VERSION
    stochastic: ClassVar[bool] = False
    # The attribute name of the network whose forward passes count as nfe (e.g. ``"net"``): the harness
    # hooks that module to count denoiser passes per image (``scoring/checks.py``); required, "" = unset.
    denoiser: ClassVar[str] = ""
    # profile keys read only when another key turns them on (the conformance read check runs `tiny`)
    conditional_keys: ClassVar[frozenset[str]] = frozenset()
    # The training_step key the progress line shows (e.g. a GAN's generator loss, not a
    # discriminator term); None = the first key training_step returns.
    headline_loss: ClassVar[str | None] = None
    # The harness augmentation kind (``segarena.platform.run.augment.KINDS``) closest to the training
    # augmentation the method's paper/official code uses. Declarative: training applies the suite's
    # ``augment:`` to every method alike, never this; it tells a lab which kind reproduces the paper.
    paper_augment: ClassVar[str] = "none"
    # The ``Budget.sampler`` names ``predict`` accepts; None = the samplers of its own ``budgets()``. A suite
    # budget with another sampler is refused before anything runs (``validate_budget``).
    samplers: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, hparams: dict[str, Any], task: Task) -> None:
        # a copy, so a plugin never edits the suite's dict; the conformance read-tracker asks to be kept itself
        self.hparams = hparams if getattr(hparams, "keep_identity", False) else dict(hparams)
        self.task = task

    @classmethod
    @abstractmethod
    def profiles(cls) -> dict[str, dict[str, Any]]:
        """Named hyperparameter sets as plain data; at least ``tiny`` and ``paper``.

        Harness-read keys: ``batch_size`` (training batch), ``image_size`` (optional).
        """

    @classmethod
    def search_space(cls) -> dict[str, Any]:
        """Hyperparameters worth tuning, as ``segarena.platform.search_space`` distributions."""
        return {}

    @classmethod
    def budgets(cls, profile: str) -> list[Budget]:
        """Inference budgets evaluated for a profile; one-shot methods keep the default."""
        return [Budget()]

    @classmethod
    def declared_samplers(cls) -> tuple[str, ...]:
        """``samplers``, or every sampler the plugin's own budgets use over all its profiles."""
        if cls.samplers is not None:
            return tuple(cls.samplers)
        return tuple(sorted({b.sampler for p in cls.profiles() for b in cls.budgets(p)}))

    @classmethod
    def validate_hparams(cls, hparams: dict[str, Any]) -> None:
        """Raise ``ValueError("<key>: <why>")`` when a resolved hyperparameter set cannot be right; runs on the
        driver before any cell starts. Default: each value looks like the profiles' values of that key
        (``segarena.platform.plugins.hparams``). Override to add ranges and choices, calling ``super()`` first."""
        from segarena.platform.plugins.hparams import check_like_profiles

        check_like_profiles(hparams, cls.profiles())

    @classmethod
    def validate_budget(cls, budget: Budget, hparams: dict[str, Any]) -> None:
        """Raise ``ValueError`` when ``predict`` cannot honour ``budget`` under ``hparams`` (driver side,
        before anything runs). Default: a declared sampler, ``direct`` is one step, a deterministic method
        has one ensemble member. Override for limits such as a fixed step count."""
        samplers = cls.declared_samplers()
        if budget.sampler not in samplers:
            raise ValueError(f"sampler {budget.sampler!r} is not one {cls.name} declares "
                             f"(samplers: {', '.join(samplers)})")
        if budget.sampler == "direct" and budget.steps != 1:
            raise ValueError(f"the direct sampler is one forward pass: steps must be 1, not {budget.steps}")
        if not cls.stochastic and budget.ensemble != 1:
            raise ValueError(f"{cls.name} is deterministic: ensemble must be 1, not {budget.ensemble}")

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Every trainable module, keyed by the attribute name that holds it."""

    @abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer, keyed by name (checkpointed by the harness)."""

    @abstractmethod
    def training_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on ``{"image": (B,Cin,H,W), "mask": (B,C,H,W)}``; runs its own backward."""

    @abstractmethod
    def predict(
        self, images: torch.Tensor, budget: Budget, generator: torch.Generator | None = None
    ) -> Prediction:
        """Segment ``images`` under ``budget``; deterministic for a given generator state."""

    # Optional hooks -------------------------------------------------------------------
    def fuse(self, member_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, B, C, H, W) member probabilities → (fused probs, hard mask), each (B, C, H, W).

        The harness fuses prefixes of one draw of members with it (ensemble sizes from one sampling),
        so it must be the rule ``predict`` applies; the default is the mean thresholded at 0.5. Raise
        ``NotImplementedError`` when members alone cannot reproduce ``predict``: each size is then sampled.
        """
        probs = member_probs.mean(0)
        return probs, probs > 0.5

    def extra_state(self) -> dict[str, Any]:
        """Non-module state to checkpoint (e.g. a latent scale factor, a step counter)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what ``extra_state`` returned."""

    def card_tags(self) -> dict[str, str]:
        """Facts about this instance a leaderboard row must carry (e.g. ``{"pretrained": "none"}``);
        the harness logs them as run tags."""
        return {}

    def train(self, mode: bool = True) -> MethodPlugin:
        for module in self.modules().values():
            module.train(mode)
        return self

    def eval(self) -> MethodPlugin:
        return self.train(False)

    # Checkpointing (harness-facing, overridable) ---------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "modules": {k: unwrap(m).state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.modules().items():
            unwrap(m).load_state_dict(state["modules"][k])
        for k, o in self.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.load_extra_state(state.get("extra", {}))

    def num_parameters(self) -> int:
        return sum(p.numel() for m in self.modules().values() for p in m.parameters())


def unwrap(module: nn.Module) -> nn.Module:
    """The bare module under a DDP wrapper."""
    return getattr(module, "module", module)


def threshold_probs(probs: torch.Tensor, exclusive: bool) -> torch.Tensor:
    """Hard mask from foreground probabilities: argmax with background when classes are
    exclusive, else 0.5 per channel. Shared by one-shot baselines."""
    if not exclusive or probs.shape[1] == 1:
        return probs > 0.5
    background = (1 - probs.sum(1, keepdim=True)).clamp_min(0)
    labels = torch.cat([background, probs], 1).argmax(1)
    return torch.stack([labels == c + 1 for c in range(probs.shape[1])], 1)
