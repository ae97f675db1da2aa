"""Budget grids from one checkpoint: prefix scoring equals direct prediction, the fallback when ``fuse`` cannot
reproduce a method, stability repeats, background scoring, saved predictions, and the suite's grid syntax."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from segarena_test_fakes import UntrainedMethod

from segarena.platform.dataset import Case
from segarena.platform.errors import SpecError
from segarena.platform.plugin import Budget, Prediction, Task
from segarena.platform.scoring.evaluation import evaluate
from segarena.platform.scoring.metrics import SUMMARY_METRICS
from segarena.platform.scoring.predictions import load_npz
from segarena.platform.scoring.sampling import batch_seed, predict_as_evaluated, prefix_prediction, repeat_seed

TASK = Task(in_channels=1, num_classes=1, image_size=(8, 8))
CFG = {"batch_size": 2, "timing_repeats": 1, "timing_warmup": 0, "throughput_batch": 1}
CPU = torch.device("cpu")
SCORE_COLUMNS = ["budget", "case_id", "class", "dice", "iou", "hd95", "nsd", "ged", "diversity", "entropy", "ece",
                 "brier", "nll", "members", "dice_repeat_std"]


class NoisyMembers(UntrainedMethod):
    """A deterministic fake stochastic method: member k = sigmoid(4·(image − ½) + noise_k), the noise drawn
    member by member from the generator, so an ensemble of e is the first e members of a larger one."""

    name = "noisy-members"
    stochastic = True

    def __init__(self, noise: float = 1.0, fusion: str = "mean") -> None:
        super().__init__({}, TASK)
        self.noise, self.fusion = noise, fusion

    def _passes(self, images, steps):
        for _ in range(steps):
            images = self.net(images)
        return images

    def predict(self, images, budget, generator=None):
        member_probs = torch.stack([torch.sigmoid(4 * (self._passes(images, budget.steps) - 0.5) + self.noise
                                                  * torch.randn(images.shape, generator=generator))
                                    for _ in range(budget.ensemble)])
        probs, mask = self._fuse_as_predicted(member_probs)
        return Prediction(probs=probs, mask=mask, nfe=budget.nfe, members=member_probs > 0.5,
                          member_probs=member_probs)

    def _fuse_as_predicted(self, member_probs):
        if self.fusion == "majority":
            probs = (member_probs > 0.5).float().mean(0)
            return probs, probs > 0.5
        probs = member_probs.mean(0)  # the default ``fuse``, written out (NoFuse disables the hook)
        return probs, probs > 0.5


class NoFuse(NoisyMembers):
    def fuse(self, member_probs):
        raise NotImplementedError


def case(i: int, fg: bool = True, volume: str | None = None) -> Case:
    img = torch.zeros(1, 8, 8)
    if fg:
        img[0, 2:5, 2:4 + i % 3] = 1
    return Case(f"c{i}", img, img.bool(), spacing=(1.0, 1.0, 2.0) if volume else None, volume=volume,
                slice_index=i if volume else None)


CASES = [case(i, fg=i != 3) for i in range(5)]


def scores(table: pd.DataFrame) -> pd.DataFrame:
    return table[SCORE_COLUMNS].reset_index(drop=True)


def test_prefix_of_a_draw_equals_predicting_that_size_directly():
    """On the deterministic fake stochastic plugin (its members are drawn one after another)."""
    method, images = NoisyMembers(), torch.stack([c.image for c in CASES])
    big = method.predict(images, Budget(ensemble=5), torch.Generator().manual_seed(3))
    for e in range(1, 5):
        direct = method.predict(images, Budget(ensemble=e), torch.Generator().manual_seed(3))
        sub = prefix_prediction(method, big, e, e)
        assert torch.equal(sub.mask, direct.mask) and torch.equal(sub.probs, direct.probs)
        assert torch.equal(sub.members, direct.members) and torch.equal(sub.member_probs, direct.member_probs)


@pytest.mark.parametrize("name,budget", [("medsegdiff", Budget(steps=5, ensemble=3, sampler="ddim")),
                                         ("sdseg", Budget(steps=1, ensemble=3, sampler="direct"))])
def test_prefix_equals_direct_on_real_methods_at_tiny_profile(name, budget):
    """Real plugins (untrained, 32 px) whose only randomness is the member-major initial noise (MedSegDiff's
    DDIM with eta 0, SDSeg's direct sampler): prefixes equal direct prediction exactly."""
    from segarena.platform.plugins.registry import discover

    cls = discover(use_env=False).method(name)
    task = Task(in_channels=1, num_classes=1, image_size=(32, 32))
    torch.manual_seed(0)
    method = cls({**cls.profiles()["tiny"], "image_size": 32 if name == "medsegdiff" else [32, 32]}, task)
    method.eval()
    images = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        big = method.predict(images, budget, torch.Generator().manual_seed(5))
        for e in range(1, budget.ensemble):
            small = Budget(steps=budget.steps, ensemble=e, sampler=budget.sampler)
            direct = method.predict(images, small, torch.Generator().manual_seed(5))
            sub = prefix_prediction(method, big, e, direct.nfe)
            assert torch.equal(sub.mask, direct.mask.bool()) and torch.equal(sub.probs, direct.probs)
            assert torch.equal(sub.members, direct.members)


def test_evaluate_scores_smaller_ensembles_on_prefixes_identical_to_direct():
    budgets = [Budget(steps=2, ensemble=e, sampler="x") for e in (1, 3, 5)]
    table, results = evaluate(NoisyMembers(), CASES, budgets, TASK, CPU, 7, CFG)
    for b in budgets:
        alone, res = evaluate(NoisyMembers(), CASES, [b], TASK, CPU, 7, CFG)
        pd.testing.assert_frame_equal(scores(table[table["budget"] == b.name]), scores(alone))
        assert results[b.name].members_from == "x2-e5" and res[b.name].members_from == b.name
        assert results[b.name].metrics["nfe"] == b.nfe  # reported nfe stays steps × size
    assert results["x2-e5"].metrics["diversity"] > 0 and results["x2-e1"].metrics["diversity"] == 0


def test_prefix_scoring_falls_back_to_sampling_when_fuse_cannot_reproduce_predict():
    budgets = [Budget(ensemble=2), Budget(ensemble=4)]
    for method in (NoFuse(), NoisyMembers(fusion="majority")):  # fuse raises / fuse ≠ predict's majority vote
        _, results = evaluate(method, CASES, budgets, TASK, CPU, 1, CFG)
        assert results["direct-e2"].members_from == "direct-e2"
    table, _ = evaluate(NoisyMembers(fusion="majority"), CASES, budgets, TASK, CPU, 1, CFG)
    alone, _ = evaluate(NoisyMembers(fusion="majority"), CASES, budgets[:1], TASK, CPU, 1, CFG)
    pd.testing.assert_frame_equal(scores(table[table["budget"] == "direct-e2"]), scores(alone))


def test_every_summary_metric_is_reported_and_nothing_is_nan():
    cases = [*CASES, case(5, fg=False), *[case(10 + i, fg=i != 1, volume="vol") for i in range(3)],
             case(20, volume="one-slice")]
    budgets = [Budget(ensemble=1), Budget(ensemble=3)]
    for method in (NoisyMembers(), NoisyMembers(noise=0.0)):
        table, results = evaluate(method, cases, budgets, TASK, CPU, 0, {**CFG, "repeats": 2})
        assert not table.isna().any().any()
        assert sorted(table["case_id"].unique()) == sorted([f"c{i}" for i in range(6)] + ["vol", "one-slice"])
        for b in budgets:
            m = results[b.name].metrics
            assert set(SUMMARY_METRICS) <= set(m) and all(math.isfinite(v) for v in m.values())
    assert (table["dice_repeat_std"] == 0).all()  # noise 0: every repeat predicts the same masks


def test_repeats_record_the_std_of_dice_over_sampling_seeds():
    budget = [Budget(ensemble=1)]
    table, results = evaluate(NoisyMembers(noise=2.0), CASES, budget, TASK, CPU, 4, {**CFG, "repeats": 3})
    dice = np.stack([evaluate(NoisyMembers(noise=2.0), CASES, budget, TASK, CPU, repeat_seed(4, r), CFG)[0]["dice"]
                     for r in range(3)])
    np.testing.assert_allclose(table["dice_repeat_std"], dice.std(0), rtol=0, atol=1e-12)
    assert results["direct-e1"].metrics["dice_repeat_std"] > 0
    np.testing.assert_array_equal(table["dice"], dice[0])  # repeat 0 is the reported evaluation
    single, _ = evaluate(NoisyMembers(noise=2.0), CASES, budget, TASK, CPU, 4, CFG)
    assert (single["dice_repeat_std"] == 0).all()  # one repeat has no spread


def test_background_scoring_gives_the_same_rows_as_inline():
    budgets = [Budget(ensemble=1), Budget(ensemble=3)]
    threaded, _ = evaluate(NoisyMembers(), CASES, budgets, TASK, CPU, 2, CFG, score_workers=1)
    inline, _ = evaluate(NoisyMembers(), CASES, budgets, TASK, CPU, 2, CFG, score_workers=0)
    pd.testing.assert_frame_equal(threaded, inline)


def saved_files(root: Path, budget: str) -> list[str]:
    """The files evaluate saved for one budget, as ``<budget>/<path>`` under ``predictions_dir``."""
    return sorted(p.relative_to(root).as_posix() for p in (root / budget).rglob("*") if p.is_file())


def test_saved_predictions_hold_every_mask_and_overlays(tmp_path: Path, monkeypatch):
    budgets = [Budget(ensemble=1), Budget(ensemble=3)]
    cases = [*CASES, *[case(10 + i, volume="vol") for i in range(2)]]
    _, results = evaluate(NoisyMembers(), cases, budgets, TASK, CPU, 0, CFG, predictions_dir=tmp_path)
    files = saved_files(tmp_path, "direct-e3")
    assert "direct-e3/predictions.npz" in files
    overlays = [f for f in files if f.endswith(".png")]
    assert len(overlays) == 6 and all((tmp_path / f).stat().st_size > 0 for f in files)  # 6 scored cases
    saved = load_npz(tmp_path / "direct-e3" / "predictions.npz")
    direct = NoisyMembers().predict(torch.stack([c.image for c in cases[:2]]), budgets[1],
                                    torch.Generator().manual_seed(batch_seed(0, 0)))  # the first batch
    assert saved["case_ids"] == [c.case_id for c in cases] and saved["volume"][-1] == "vol"
    np.testing.assert_array_equal(saved["masks"][:2], direct.mask.numpy())
    np.testing.assert_allclose(saved["probs"][:2], direct.probs.numpy(), atol=1e-3)
    again = predict_as_evaluated(NoisyMembers(), torch.stack([c.image for c in cases]), budgets[0], 0,
                                 CFG["batch_size"], members_from=budgets[1])  # direct-e1 came from direct-e3
    assert results["direct-e1"].members_from == "direct-e3"
    np.testing.assert_array_equal(load_npz(tmp_path / "direct-e1" / "predictions.npz")["masks"], again.numpy())
    import segarena.platform.scoring.predictions as predictions

    monkeypatch.setattr(predictions, "NPZ_MAX_CASES", 3)
    _, results = evaluate(NoisyMembers(), cases, budgets[:1], TASK, CPU, 0, CFG, predictions_dir=tmp_path / "o")
    files = saved_files(tmp_path / "o", "direct-e1")
    assert files and not any(f.endswith(".npz") for f in files)  # overlays only, ≥ 3 cases
    _, results = evaluate(NoisyMembers(), cases, budgets[:1], TASK, CPU, 0, {**CFG, "save_predictions": "none"},
                          predictions_dir=tmp_path / "n")
    assert not (tmp_path / "n").exists()


# suite syntax -------------------------------------------------------------------------------------------------------

def write(tmp_path: Path, budgets: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: t\nmethods:\n  - name: unet\n    budgets: {budgets}\ndatasets: [{{name: synthetic}}]\n"
                    "evaluation: {repeats: 3, nsd_tolerance_mm: 2.0, save_predictions: all}\n")
    return path


def test_budget_grid_and_list_forms(tmp_path: Path):
    from segarena.platform.spec.suite import budget_list, load_suite

    spec, _ = load_suite(write(tmp_path, "{sampler: ddim, steps: [1, 5], ensemble: [1, 3]}"))
    assert [b.name for b in budget_list(spec.methods[0].budgets)] == ["ddim1-e1", "ddim1-e3", "ddim5-e1", "ddim5-e3"]
    assert (spec.evaluation.repeats, spec.evaluation.nsd_tolerance_mm, spec.evaluation.save_predictions) == \
        (3, 2.0, "all")
    spec, _ = load_suite(write(tmp_path, "[{sampler: ddim, steps: 2, ensemble: 4}, {}]"))
    assert [b.name for b in budget_list(spec.methods[0].budgets)] == ["ddim2-e4", "direct-e1"]


@pytest.mark.parametrize("budgets,message", [
    ("{sampler: ddim, steps: [0, 5], ensemble: [1]}", "budgets.grid.steps"),
    ("{sampler: ddim, steps: [5, 5], ensemble: [1]}", "distinct"),
    ("{sampler: ddim, steps: [5], ensemble: [1], extra: 1}", "unknown field"),
    ("[{sampler: ddim, steps: 2}, {sampler: ddim, steps: 2}]", "budgets repeat: ddim2-e1"),
])
def test_bad_budget_grids_name_the_field(tmp_path: Path, budgets: str, message: str):
    from segarena.platform.spec.suite import load_suite

    with pytest.raises(SpecError, match=message):
        load_suite(write(tmp_path, budgets))


@pytest.mark.parametrize("name", ["medsegdiff", "sdseg", "cdal"])
@pytest.mark.parametrize("classes", [1, 2])
def test_diffusion_plugins_fuse_hook_reproduces_their_prediction(name: str, classes: int):
    """Prefix scoring is on for the built-in diffusion methods: ``fuse`` on all members gives back the fused
    probabilities and mask (one-hot cDAL, whose fusion needs its background channel, opts out)."""
    from segarena.platform.plugins.registry import discover

    cls = discover(use_env=False).method(name)
    task = Task(in_channels=1, num_classes=classes, image_size=(32, 32))
    profile = cls.profiles()["tiny"]
    size = {"medsegdiff": 32, "sdseg": [32, 32]}.get(name)
    torch.manual_seed(0)
    method = cls({**profile, **({"image_size": size} if size else {})}, task)
    method.eval()
    steps = cls.budgets("tiny")[0]
    budget = Budget(steps=steps.steps, ensemble=3, sampler=steps.sampler)
    with torch.inference_mode():
        out = method.predict(torch.rand(2, 1, 32, 32), budget, torch.Generator().manual_seed(0))
        assert out.member_probs is not None and tuple(out.member_probs.shape) == (3, 2, classes, 32, 32)
        if name == "cdal" and classes > 1:
            with pytest.raises(NotImplementedError):
                method.fuse(out.member_probs)
            return
        probs, mask = method.fuse(out.member_probs)
    assert torch.equal(probs, out.probs) and torch.equal(mask.bool(), out.mask.bool())
