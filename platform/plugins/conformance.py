"""The shared conformance checks every method plugin passes (diffusers-style shared test class).

Built-in plugins' tests subclass ``MethodConformance`` (pytest collects ``Test*`` subclasses);
``segarena plugins check NAME`` runs the same checks on any plugin via ``run_checks``. Each
check is a plain method using ``assert``, so it runs with or without pytest.
"""

from __future__ import annotations

import contextvars
import copy
import inspect
import math
import os
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NoReturn

import torch

from segarena.platform.plugin import API_VERSION, Budget, MethodPlugin, Prediction, Task, unwrap
from segarena.platform.scoring.checks import count_denoiser_calls
from segarena.platform.search_space import Choice, IntUniform, LogUniform, Uniform


def synthetic_batch(task: Task, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Discs whose brightness marks the foreground, so a method can learn them in a few steps."""
    g = torch.Generator().manual_seed(seed)
    h, w = task.image_size
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    masks = torch.zeros(batch, task.num_classes, h, w, dtype=torch.bool)
    for b in range(batch):
        for c in range(task.num_classes):
            cy, cx = (torch.rand(2, generator=g) * torch.tensor([h / 2, w / 2]) + torch.tensor([h / 4, w / 4]))
            r = (0.12 + 0.1 * torch.rand(1, generator=g).item()) * min(h, w)
            masks[b, c] = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            if task.exclusive and c > 0:
                masks[b, c] &= ~masks[b, :c].any(0)
    image = masks.float().sum(1, keepdim=True).clamp(max=1).repeat(1, task.in_channels, 1, 1)
    image = image + 0.1 * torch.randn(image.shape, generator=g)
    return {"image": image, "mask": masks.float()}


HARNESS_KEYS = frozenset({"batch_size"})  # read by the harness's training loop, not by the plugin


class _ReadTracker(dict):
    """A dict that remembers which keys were read (``items()`` reads every key)."""

    keep_identity = True  # MethodPlugin.__init__ keeps it instead of copying, so reads stay visible

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)

    def items(self) -> Any:
        self.read.update(super().keys())
        return super().items()

    # keys()/__iter__ are left alone: overriding them would make every copy (dict(d), d.copy()) "read"
    # every key; a plugin that copies its hparams is tracked through the copy the check puts back.


@dataclass
class CheckResult:
    name: str
    passed: bool
    detail: str = ""
    skipped: bool = False  # the check does not apply to this plugin: neither a pass nor a failure

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.passed else "FAIL")


class CheckSkipped(Exception):
    """Raised by a check that does not apply (outside pytest; under pytest it is a pytest skip)."""


_outside_pytest = contextvars.ContextVar("outside_pytest", default=False)


def skip_check(reason: str) -> NoReturn:
    """Report the running check as not applicable: a pytest skip, or SKIP in ``segarena plugins check``."""
    if not _outside_pytest.get() and os.environ.get("PYTEST_CURRENT_TEST"):
        import pytest

        pytest.skip(reason)
    raise CheckSkipped(reason)


class MethodConformance:
    """Subclass and set ``method_cls`` (and optionally ``profile``, ``task``, ``train_steps``)."""

    method_cls: ClassVar[type[MethodPlugin]]
    profile: ClassVar[str] = "tiny"
    task: ClassVar[Task] = Task(in_channels=1, num_classes=1, image_size=(64, 64), spacing=(1.0, 1.0))
    train_steps: ClassVar[int] = 2
    batch_size: ClassVar[int] = 2

    # helpers -------------------------------------------------------------------------
    def make_method(self, seed: int = 0, **overrides: Any) -> MethodPlugin:
        torch.manual_seed(seed)
        hparams = {**self.method_cls.profiles()[self.profile], **overrides}
        return self.method_cls(hparams, self.task)

    def batch(self, seed: int = 0) -> dict[str, torch.Tensor]:
        return synthetic_batch(self.task, self.batch_size, seed)

    def budgets(self) -> list[Budget]:
        return self.method_cls.budgets(self.profile)

    def _predict(self, method: MethodPlugin, budget: Budget, seed: int = 0) -> Prediction:
        method.eval()
        with torch.inference_mode():
            return method.predict(self.batch(seed)["image"], budget, torch.Generator().manual_seed(seed))

    # checks --------------------------------------------------------------------------
    def test_metadata(self) -> None:
        cls = self.method_cls
        for attr in ("name", "version", "paper"):
            assert isinstance(getattr(cls, attr, None), str) and getattr(cls, attr), f"{attr} missing"
        assert cls.api_version == API_VERSION, f"api_version {cls.api_version} != {API_VERSION}"

    def test_profiles_are_plain_data(self) -> None:
        profiles = self.method_cls.profiles()
        assert {"tiny", "paper"} <= set(profiles), f"profiles {sorted(profiles)} lack tiny/paper"
        for name, prof in profiles.items():
            assert isinstance(prof, dict), f"profile {name} is not a dict"
            assert copy.deepcopy(prof) == prof, f"profile {name} is not plain data"

    def test_search_space(self) -> None:
        space = self.method_cls.search_space()
        assert isinstance(space, dict)
        known = set(self.method_cls.profiles()[self.profile])
        for key, dist in space.items():
            assert isinstance(dist, (LogUniform, Uniform, IntUniform, Choice)), f"{key}: {dist!r}"
            assert key in known, f"search-space key {key!r} is not a hyperparameter of profile {self.profile}"

    def test_budgets(self) -> None:
        budgets = self.budgets()
        assert budgets and all(isinstance(b, Budget) for b in budgets)
        assert len({b.name for b in budgets}) == len(budgets), "budget names repeat"
        if not self.method_cls.stochastic:
            assert all(b.ensemble == 1 for b in budgets), "deterministic method with ensembles"

    def test_every_profile_key_is_read(self) -> None:
        """A profile key nothing reads still changes the training key, so it retrains for nothing and
        misleads whoever tunes it: every key must be read by construction, training or prediction."""
        hparams = _ReadTracker(self.method_cls.profiles()[self.profile])
        torch.manual_seed(0)
        method = self.method_cls(hparams, self.task)
        method.train()
        for step in range(self.train_steps):
            method.training_step(self.batch(step))
        for budget in self.budgets():
            self._predict(method, budget)
        unread = sorted(set(hparams) - hparams.read - HARNESS_KEYS - set(self.method_cls.conditional_keys))
        assert not unread, f"profile {self.profile!r} keys never read: {unread}"

    def test_training_steps_change_weights(self) -> None:
        method = self.make_method()
        before = {k: [p.detach().clone() for p in m.parameters()] for k, m in method.modules().items()}
        method.train()
        for step in range(self.train_steps):
            logs = method.training_step(self.batch(step))
            assert isinstance(logs, dict) and logs, "training_step must return a non-empty dict"
            for key, value in logs.items():
                assert isinstance(value, float) and math.isfinite(value), f"log {key}={value!r}"
        changed = any(not torch.equal(a, p) for k, m in method.modules().items()
                      for a, p in zip(before[k], m.parameters(), strict=True))
        assert changed, "no parameter changed after training steps"

    def test_checkpoint_round_trip(self) -> None:
        method = self.make_method(seed=0)
        method.train()
        method.training_step(self.batch(0))
        state = copy.deepcopy(method.state_dict())
        other = self.make_method(seed=1)
        other.load_state_dict(state)
        for k, m in method.modules().items():
            for (n, a), b in zip(unwrap(m).state_dict().items(), unwrap(other.modules()[k]).state_dict().values(),
                                 strict=True):
                assert torch.equal(a, b), f"{k}.{n} differs after load_state_dict"
        budget = self.budgets()[0]
        a, b = self._predict(method, budget), self._predict(other, budget)
        assert torch.equal(a.mask, b.mask), "restored model predicts differently"

    def test_predict_shapes_and_ranges(self) -> None:
        method = self.make_method()
        b, c, (h, w) = self.batch_size, self.task.num_classes, self.task.image_size
        for budget in self.budgets():
            out = self._predict(method, budget)
            assert isinstance(out, Prediction)
            assert out.probs.shape == (b, c, h, w), f"{budget.name}: probs {tuple(out.probs.shape)}"
            assert out.mask.shape == (b, c, h, w), f"{budget.name}: mask {tuple(out.mask.shape)}"
            assert out.mask.dtype == torch.bool, f"{budget.name}: mask dtype {out.mask.dtype}"
            assert torch.isfinite(out.probs).all(), f"{budget.name}: NaN/inf in probs"
            assert out.probs.min() >= 0 and out.probs.max() <= 1, f"{budget.name}: probs outside [0,1]"
            if budget.ensemble > 1:
                assert out.members is not None, f"{budget.name}: members missing"
                assert out.members.shape == (budget.ensemble, b, c, h, w), \
                    f"{budget.name}: members {tuple(out.members.shape)}"

    def test_same_seed_same_output(self) -> None:
        method = self.make_method()
        for budget in self.budgets():
            a, b = self._predict(method, budget, seed=3), self._predict(method, budget, seed=3)
            assert torch.equal(a.mask, b.mask) and torch.equal(a.probs, b.probs), f"{budget.name}: not deterministic"

    def test_nfe_matches_budget(self) -> None:
        """Counts denoiser rows with a forward hook: rows / images = forward passes per image."""
        method = self.make_method()
        denoiser = getattr(self.method_cls, "denoiser", None)
        assert denoiser, "set the class attribute `denoiser` to the attribute name of the network counted as nfe"
        with count_denoiser_calls(method) as counter:  # the evaluation harness counts with the same hook
            for budget in self.budgets():
                counter.reset()
                out = self._predict(method, budget)
                assert out.nfe == budget.nfe, f"{budget.name}: reported nfe {out.nfe} != budget {budget.nfe}"
                counted = counter.per_image(self.batch_size)
                assert counted == budget.nfe, f"{budget.name}: denoiser ran {counted} passes per image, " \
                                              f"expected {budget.nfe}"


def check_names(cls: type) -> list[str]:
    return [n for n, _ in inspect.getmembers(cls, inspect.isfunction) if n.startswith("test_")]


def run_check_class(suite_cls: type, on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    """Run a conformance class's checks in definition order, outside pytest; failures never stop the run."""
    order = [n for klass in reversed(suite_cls.__mro__) for n in vars(klass)]
    suite = suite_cls()
    results = []
    token = _outside_pytest.set(True)
    try:
        for name in sorted(check_names(suite_cls), key=order.index):
            results.append(_run_one(suite, name))
            if on_result:
                on_result(results[-1])
    finally:
        _outside_pytest.reset(token)
    return results


def _run_one(suite: Any, name: str) -> CheckResult:
    try:
        getattr(suite, name)()
        return CheckResult(name, True)
    except CheckSkipped as exc:
        return CheckResult(name, False, str(exc), skipped=True)
    except Exception as exc:  # every failure is reported
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return CheckResult(name, False, f"{type(exc).__name__}: {exc} ({tb.filename}:{tb.lineno})")


def run_checks(method_cls: type[MethodPlugin], on_result: Callable[[CheckResult], None] | None = None,
               **attrs: Any) -> list[CheckResult]:
    """Every method conformance check on ``method_cls`` (``segarena plugins check``)."""
    suite_cls = type(f"Check{method_cls.__name__}", (MethodConformance,), {"method_cls": method_cls, **attrs})
    return run_check_class(suite_cls, on_result)
