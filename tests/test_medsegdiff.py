"""MedSegDiff: conformance plus FF-Parser, fusion, sampler, ensemble-batching and learning checks."""

import itertools

import pytest
import torch

from segarena.methods.medsegdiff import MedSegDiffMethod
from segarena.methods.medsegdiff.diffusion import sampling_scheduler
from segarena.methods.medsegdiff.ffparser import FFParser
from segarena.methods.medsegdiff.fusion import Fusion
from segarena.methods.medsegdiff.profiles import OFFICIAL_SWITCHES
from segarena.platform.conformance import MethodConformance, synthetic_batch
from segarena.platform.plugin import Budget, Task

TASK32 = Task(in_channels=1, num_classes=1, image_size=(32, 32))


class TestMedSegDiffConformance(MethodConformance):
    method_cls = MedSegDiffMethod


def make(task: Task = TASK32, seed: int = 0, **overrides) -> MedSegDiffMethod:
    torch.manual_seed(seed)
    return MedSegDiffMethod({**MedSegDiffMethod.profiles()["tiny"], **overrides}, task)


def trained(method: MedSegDiffMethod, steps: int = 3) -> MedSegDiffMethod:
    """A few steps so the zero-initialised output conv no longer hides the network."""
    batch = synthetic_batch(method.task, 2, seed=5)
    method.train()
    for _ in range(steps):
        method.training_step(batch)
    return method.eval()


@pytest.mark.parametrize("shape", [(2, 4, 16, 16), (1, 3, 8, 12), (2, 2, 7, 9)])
def test_ffparser_identity_init_is_identity(shape):
    x = torch.randn(shape)
    ffp = FFParser(shape[1], shape[2], shape[3], init="identity")
    assert (ffp(x) - x).abs().max() <= 1e-6
    official = FFParser(shape[1], shape[2], shape[3], init="official")
    assert (official(x) - x).abs().max() > 0.1  # randn·0.02 starts near zero, not identity


@pytest.mark.parametrize("conditioning", ["paper", "official_gate"])
def test_fusion_shapes_at_each_stage_and_no_modules_built_in_forward(conditioning):
    method = make(fusion_stages=[0, 1, 2], conditioning=conditioning, cond_stages=3)
    names = {n for m in method.modules().values() for n, _ in m.named_parameters()}
    seen = {}
    hooks = [f.register_forward_hook(lambda mod, args, out, k=int(k): seen.__setitem__(k, (args, out)))
             for k, f in method.denoiser.fusion.items()]
    images = synthetic_batch(TASK32, 2)["image"]
    with torch.no_grad():
        cond = method.condition(images)
        method.denoiser(torch.randn(2, 1, 32, 32), torch.tensor([7]), cond)
    for h in hooks:
        h.remove()
    assert sorted(seen) == [0, 1, 2]
    for k, ((m_x, term), out) in seen.items():
        expected = (2, method.denoiser.channels[k], 32 >> k, 32 >> k)
        assert tuple(m_x.shape) == tuple(term.shape) == tuple(out.shape) == expected, (k, out.shape)
        assert not torch.equal(out, m_x)  # the image changes the denoiser features
    assert {n for m in method.modules().values() for n, _ in m.named_parameters()} == names
    assert all(isinstance(f, Fusion) and f.mode == conditioning for f in method.denoiser.fusion.values())


def count_calls(module: torch.nn.Module, rows: list[int]):
    return module.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))


@pytest.mark.parametrize("steps,ensemble", [(5, 1), (10, 3)])
def test_ddim_calls_denoiser_k_times_per_member_and_condition_once(steps, ensemble):
    method = make().eval()
    den_rows, cond_rows = [], []
    h1, h2 = count_calls(method.denoiser, den_rows), count_calls(method.condition, cond_rows)
    images = synthetic_batch(TASK32, 2)["image"]
    with torch.inference_mode():
        out = method.predict(images, Budget(steps, ensemble, "ddim"), torch.Generator().manual_seed(0))
    h1.remove()
    h2.remove()
    assert len(den_rows) == steps  # one batched forward per step ...
    assert den_rows == [ensemble * 2] * steps  # ... carrying every member of every image
    assert cond_rows == [2]  # the image branch runs once per image, not per step or member
    assert out.nfe == steps * ensemble and out.members.shape == (ensemble, 2, 1, 32, 32)


def test_ddpm_runs_all_t_steps_deterministic_per_generator():
    method = trained(make(timesteps=50), steps=2)
    images = synthetic_batch(TASK32, 1)["image"]
    rows = []
    hook = count_calls(method.denoiser, rows)
    with torch.inference_mode():
        a, b, c = (method.predict(images, Budget(50, 2, "ddpm"), torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    hook.remove()
    assert rows == [2] * (3 * 50)
    assert torch.isfinite(a.probs).all()
    assert torch.equal(a.probs, b.probs) and torch.equal(a.mask, b.mask)
    assert not torch.equal(a.probs, c.probs)
    with pytest.raises(ValueError):
        sampling_scheduler(Budget(10, 1, "ddpm"), 50)  # MONAI's DDPM step is t -> t-1 only
    with pytest.raises(ValueError):
        sampling_scheduler(Budget(10, 1, "ddpm"), 10)  # rescaled β > 1
    with pytest.raises(ValueError):
        sampling_scheduler(Budget(7, 1, "ddim"), 20)


def test_ddim_timesteps_match_the_step_stride():
    sched = sampling_scheduler(Budget(10, 1, "ddim"), 100)
    ts = sched.timesteps.tolist()
    assert ts[0] == 99 and ts[-1] == 9
    assert all(a - b == 100 // 10 for a, b in itertools.pairwise(ts))


@pytest.mark.parametrize("switches", [{}, OFFICIAL_SWITCHES])
def test_batched_ensemble_equals_members_one_by_one(switches):
    method = trained(make(**switches))
    images = synthetic_batch(TASK32, 2, seed=3)["image"]
    e, budget = 3, Budget(5, 3, "ddim")
    noise = torch.randn(e * 2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        cond = method.condition(images)
        batched = method.sample_members(cond, e, noise, budget)
        single = torch.cat([method.sample_members(cond, 1, noise[i * 2:(i + 1) * 2], budget) for i in range(e)])
    assert torch.allclose(batched, single, atol=1e-5), (batched - single).abs().max()
    assert not torch.allclose(batched[:2], batched[2:4], atol=1e-3)  # members differ


def test_official_switches_train_and_predict():
    method = make(**OFFICIAL_SWITCHES)
    logs = method.train().training_step(synthetic_batch(TASK32, 2))
    assert {"loss", "loss_eps", "loss_cal"} <= set(logs)
    assert logs["loss"] > logs["loss_eps"]  # λ_cal·cal loss is part of the objective
    with torch.inference_mode():
        out = method.eval().predict(synthetic_batch(TASK32, 2)["image"], Budget(5, 2, "ddim"),
                                    torch.Generator().manual_seed(0))
    assert out.probs.shape == (2, 1, 32, 32) and 0 <= out.probs.min() and out.probs.max() <= 1


def test_multiclass_exclusive_masks_do_not_overlap():
    task = Task(in_channels=1, num_classes=3, image_size=(32, 32))
    method = trained(make(task))
    with torch.inference_mode():
        out = method.predict(synthetic_batch(task, 2)["image"], Budget(5, 2, "ddim"), torch.Generator().manual_seed(0))
    assert out.mask.shape == (2, 3, 32, 32) and out.members.shape == (2, 2, 3, 32, 32)
    assert int(out.mask.sum(1).max()) <= 1 and int(out.members.sum(2).max()) <= 1


def eps_loss(method: MedSegDiffMethod, batch: dict, seed: int = 0) -> float:
    """ε-MSE at fixed timesteps and noise, so losses before/after training are comparable."""
    g = torch.Generator().manual_seed(seed)
    x0 = method.encode_mask(batch["mask"]).repeat(4, 1, 1, 1)
    t = torch.randint(0, method.hparams["timesteps"], (x0.shape[0],), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        cond = method.eval().condition(batch["image"]).repeat(4)
        eps = method.denoiser(method.scheduler.add_noise(x0, noise, t), t, cond)
    return float(((eps - noise) ** 2).mean())


def test_training_loss_halves_on_synthetic_discs():
    method = make()  # tiny profile at 32 px: halves in ~15 steps, bounded at 25
    batch = synthetic_batch(TASK32, 8, seed=1)
    before = eps_loss(method, batch)
    method.train()
    for _ in range(25):
        method.training_step(batch)
    after = eps_loss(method, batch)
    assert after <= 0.5 * before, (before, after)


def test_ema_weights_are_used_for_sampling_and_survive_a_checkpoint():
    import copy

    task = Task(in_channels=1, num_classes=1, image_size=(32, 32))
    hp = {**MedSegDiffMethod.profiles()["tiny"], "ema_decay": 0.5}
    torch.manual_seed(0)
    method = MedSegDiffMethod(hp, task)
    batch = synthetic_batch(task, 2)
    for _ in range(3):
        method.training_step(batch)
    budget = MedSegDiffMethod.budgets("tiny")[0]
    with torch.inference_mode():
        with_ema = method.eval().predict(batch["image"], budget, torch.Generator().manual_seed(1)).probs
        method.ema.decay = 0.0  # disabled: the live weights
        live = method.predict(batch["image"], budget, torch.Generator().manual_seed(1)).probs
    assert not torch.equal(with_ema, live)
    method.ema.decay = 0.5
    other = MedSegDiffMethod(hp, task)
    other.load_state_dict(copy.deepcopy(method.state_dict()))
    with torch.inference_mode():
        again = other.eval().predict(batch["image"], budget, torch.Generator().manual_seed(1)).probs
    assert torch.equal(with_ema, again)


def test_concat_image_is_the_official_first_conv_over_image_and_mask_channels():
    """concat_image: conv(cat(I, x_t)) with in_channels = image + mask channels, built as
    conv_I(I) (once per image) + conv_x(x_t); with no fusion stage it is the image's only path."""
    import torch.nn.functional as F

    task = Task(in_channels=3, num_classes=2, image_size=(32, 32), exclusive=False)
    assert MedSegDiffMethod.profiles()["paper"]["concat_image"] is False  # the paper's path: fusion only
    assert OFFICIAL_SWITCHES["concat_image"] is True
    g = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(1, 2, 32, 32, generator=g), torch.tensor([40])
    images = torch.randn(2, 3, 32, 32, generator=g)
    outs = {}
    for concat in (True, False):
        method = make(task, concat_image=concat, fusion_stages=[]).eval()
        den = method.denoiser
        torch.nn.init.normal_(den.out[-1].weight, std=0.1)  # the zero-initialised head would hide everything
        with torch.no_grad():
            outs[concat] = [den(x_t, t, method.condition(im[None])) for im in images]
            if concat:
                conv_i, conv_x = method.condition.image_in, den.in_conv
                assert conv_i.in_channels + conv_x.in_channels == task.in_channels + task.num_classes
                joint = torch.cat([conv_i.weight, conv_x.weight], 1)  # official order: cat(image, x_t)
                ref = F.conv2d(torch.cat([images[:1], x_t], 1), joint, conv_x.bias, padding=1)
                torch.testing.assert_close(conv_x(x_t) + method.condition(images[:1]).image_in, ref)
            else:
                assert method.condition.image_in is None
    assert (outs[True][0] - outs[True][1]).abs().max() > 1e-3  # the image reaches the output through the first conv
    torch.testing.assert_close(outs[False][0], outs[False][1], rtol=0, atol=0)  # no concat, no fusion: no image


def test_profiles_docstring_states_the_measured_parameter_counts():
    from segarena.methods.medsegdiff import profiles

    counts = {}
    for name in ("tiny", "paper"):
        hp = MedSegDiffMethod.profiles()[name]
        size = {"tiny": 64, "paper": 256}[name]  # the paper's input size
        counts[name] = MedSegDiffMethod(hp, Task(1, 1, (size, size))).num_parameters()
    assert counts["tiny"] == 306_953 and counts["paper"] == 116_302_945  # 1-channel image, 1 class
    assert "306,953" in profiles.__doc__ and "116,302,945" in profiles.__doc__
