"""The harness's own checks of a prediction: denoiser passes counted with a hook, probabilities and masks
checked, each failure one line naming the numbers (platform/scoring/checks.py)."""

from __future__ import annotations

import pytest
import torch
from segarena_test_fakes import probe_class

from segarena.platform.conformance import MethodConformance
from segarena.platform.errors import PluginError
from segarena.platform.plugin import Budget, MethodPlugin, Prediction, Task
from segarena.platform.scoring.checks import PredictionError, check_prediction, count_denoiser_calls

TASK = Task(in_channels=1, num_classes=1, image_size=(16, 16))


# the probe (tests/plugins/probe.py): one conv, members batched through one pass, a little generator noise
Probe = probe_class("probe", stochastic=True, returns_members=True)
Liar = probe_class("liar", stochastic=True, returns_members=True, fail="lie")  # 5 passes per step, says 1
Logits = probe_class("logits", stochastic=True, returns_members=True, fail="logits")  # logits × 3 as probs


def make(cls: type[MethodPlugin]) -> MethodPlugin:
    return cls(cls.profiles()["tiny"], TASK)


def predict_counted(method, budget, images):
    with torch.inference_mode(), count_denoiser_calls(method) as counter:
        out = method.predict(images, budget)
    return out, counter.per_image(images.shape[0])


IMAGES = torch.randn(4, 1, 16, 16)


@pytest.mark.parametrize("budget", [Budget(), Budget(steps=3, ensemble=2, sampler="ddim")])
def test_an_honest_plugin_passes_and_its_passes_are_counted(budget):
    out, counted = predict_counted(make(Probe), budget, IMAGES)
    assert counted == budget.nfe  # E members batched through one pass count E passes per image
    check_prediction(out, budget, counted, IMAGES, 1)


def test_a_plugin_that_reports_fewer_passes_than_it_ran_fails_naming_both_numbers():
    budget = Budget(steps=1)
    out, counted = predict_counted(make(Liar), budget, IMAGES)
    assert out.nfe == 1 and counted == 5
    with pytest.raises(PredictionError, match=r"budget direct-e1: the plugin reports nfe 1 but the harness counted "
                                              r"5 denoiser pass\(es\) per image") as err:
        check_prediction(out, budget, counted, IMAGES, 1)
    assert "\n" not in str(err.value)


def test_logits_returned_as_probabilities_fail_naming_the_range():
    out, counted = predict_counted(make(Logits), Budget(), IMAGES)
    with pytest.raises(PredictionError, match=r"probs range \[-?[\d.e-]+, [\d.e-]+\] is outside \[0, 1\]"):
        check_prediction(out, Budget(), counted, IMAGES, 1)


def good() -> Prediction:
    probs = torch.rand(4, 1, 16, 16)
    return Prediction(probs=probs, mask=probs > 0.5, nfe=1)


@pytest.mark.parametrize("edit, message", [
    (lambda p: setattr(p, "probs", p.probs.masked_fill(p.probs > 0.9, float("nan"))), "NaN/inf"),
    (lambda p: setattr(p, "probs", p.probs * 1.5), "outside"),
    (lambda p: setattr(p, "mask", p.mask.long() * 2), "values other than 0/1"),
    (lambda p: setattr(p, "mask", p.mask[:, :, :8]), r"mask shape \(4, 1, 8, 16\), expected \(4, 1, 16, 16\)"),
    (lambda p: setattr(p, "probs", p.probs.repeat(1, 2, 1, 1)), r"probs shape \(4, 2, 16, 16\)"),
    (lambda p: setattr(p, "probs", p.probs.long()), "not floating point"),
    (lambda p: setattr(p, "members", torch.zeros(2, 4, 1, 16, 16, dtype=torch.bool)), r"members shape"),
    (lambda p: setattr(p, "member_probs", torch.full((1, 4, 1, 16, 16), 2.0)), r"member_probs range"),
    (lambda p: setattr(p, "nfe", 2), "reports nfe 2 but the harness counted 1"),
])
def test_each_broken_contract_is_one_line(edit, message):
    pred = good()
    edit(pred)
    with pytest.raises(PredictionError, match=message) as err:
        check_prediction(pred, Budget(), 1.0, IMAGES, 1)
    assert "\n" not in str(err.value)


def test_a_float_mask_of_zeros_and_ones_is_accepted():
    pred = good()
    pred.mask = pred.mask.float()
    check_prediction(pred, Budget(), 1, IMAGES, 1)
    check_prediction(pred, Budget(), 1, 4, 1)  # the batch size alone is enough for the leading dims


def test_the_hook_is_removed_whatever_happens():
    method = make(Probe)
    with pytest.raises(RuntimeError), count_denoiser_calls(method):
        raise RuntimeError("boom")
    assert not method.net._forward_pre_hooks


def test_passes_through_functional_call_are_counted():
    """EMA sampling runs the denoiser with averaged weights through torch.func.functional_call."""
    method = make(Probe)
    params = {k: v.detach().clone() for k, v in method.net.named_parameters()}
    with count_denoiser_calls(method) as counter:
        torch.func.functional_call(method.net, params, (IMAGES,))
    assert counter.per_image(4) == 1


def test_a_method_without_a_denoiser_is_a_plugin_error():
    class NoDenoiser(Probe):
        name = "nodenoiser"
        denoiser = ""

    with pytest.raises(PluginError, match="set the class attribute `denoiser`"):
        with count_denoiser_calls(make(NoDenoiser)):
            pass


def test_conformance_counts_with_the_same_hook():
    """``segarena plugins check`` fails the liar through the shared counter (and passes the honest one)."""
    honest = type("CheckProbe", (MethodConformance,), {"method_cls": Probe, "task": TASK})()
    honest.test_nfe_matches_budget()
    liar = type("CheckLiar", (MethodConformance,), {"method_cls": Liar, "task": TASK})()
    with pytest.raises(AssertionError, match=r"denoiser ran 5\.0 passes per image, expected 1"):
        liar.test_nfe_matches_budget()


def test_a_built_in_baseline_counts_one_pass_per_image():
    from segarena.platform.plugins.registry import discover

    cls = discover(use_env=False).method("unet")
    method = cls(cls.profiles()["tiny"], Task(1, 1, (32, 32))).eval()
    images = torch.randn(2, 1, 32, 32)
    out, counted = predict_counted(method, Budget(), images)
    assert counted == 1
    check_prediction(out, Budget(), counted, images, 1)
