"""Shared samplers (methods/common): strided DDIM (η = 0 and 1) and diffusers' DPM-Solver++ 2M / UniPC,
checked against closed forms, on both methods' training betas, and for honest nfe inside MedSegDiff."""

import ast
import itertools
from pathlib import Path

import pytest
import torch

from segarena.methods.common.ddim import StridedDDIMScheduler, ddim_sample, strided_timesteps
from segarena.methods.common.ode_samplers import ODE_SAMPLERS, ode_sample, ode_scheduler
from segarena.methods.medsegdiff import MedSegDiffMethod
from segarena.methods.medsegdiff import diffusion as msd_diffusion
from segarena.methods.sdseg.latent import build_scheduler as sdseg_scheduler
from segarena.methods.sdseg.latent import schedule_args as sdseg_schedule_args
from segarena.platform.conformance import synthetic_batch
from segarena.platform.plugin import Budget, Task

pytest.importorskip("diffusers")

SDSEG_HP = {"num_train_timesteps": 1000, "beta_start": 0.0015, "beta_end": 0.0155}
SCHEDULES = {  # name → (training DDPM scheduler, DDIM scheduler factory, clip x̂0 as the method does)
    "sdseg": (sdseg_scheduler(SDSEG_HP), lambda: StridedDDIMScheduler(**sdseg_schedule_args(SDSEG_HP)), False),
    "medsegdiff": (msd_diffusion.training_scheduler(100),
                   lambda: StridedDDIMScheduler(100, **msd_diffusion.schedule_args(100)), True),
}


def run(sampler: str, denoise, x_T: torch.Tensor, steps: int, schedule: str) -> torch.Tensor:
    train, ddim, clip = SCHEDULES[schedule]
    if sampler in ODE_SAMPLERS:
        return ode_sample(denoise, x_T, sampler, steps, train.betas, clip_x0=clip)
    return ddim_sample(denoise, x_T, ddim(), steps, eta={"ddim": 0.0, "ancestral": 1.0}[sampler],
                       generator=torch.Generator().manual_seed(0))


def test_strided_timesteps_refuse_non_divisors():
    assert strided_timesteps(1000, 4) == [999, 749, 499, 249]
    assert strided_timesteps(100, 1) == [99]
    for bad in (7, 0, 2000):
        with pytest.raises(ValueError, match="must divide"):
            strided_timesteps(1000, bad)


@pytest.mark.parametrize("sampler", ["dpmpp2m", "unipc"])
@pytest.mark.parametrize("schedule", ["sdseg", "medsegdiff"])
def test_diffusers_schedulers_run_on_the_methods_training_betas(sampler, schedule):
    train, _, clip = SCHEDULES[schedule]
    scheduler = ode_scheduler(sampler, train.betas, clip)
    assert torch.allclose(scheduler.alphas_cumprod.double(), train.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)
    steps = 10
    scheduler.set_timesteps(steps)
    assert scheduler.timesteps.tolist() == strided_timesteps(len(train.betas), steps)


@pytest.mark.parametrize("sampler,schedule", itertools.product(["ddim", "ancestral", *ODE_SAMPLERS],
                                                               ["sdseg", "medsegdiff"]))
def test_perfect_noise_oracle_recovers_x0_with_one_pass_per_step(sampler, schedule):
    """ε̂(x_t, t) = (x_t - √ᾱ_t x0) / √(1-ᾱ_t) is the exact noise of a known x0: every sampler must land on x0."""
    train = SCHEDULES[schedule][0]
    a_bar = train.alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).double() * 2 - 1  # a mask in [-1, 1]
    x_T = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    calls = []

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(t)
        a = a_bar[t].view(-1, 1, 1, 1)
        return ((x.double() - a.sqrt() * x0) / (1 - a).sqrt()).to(x.dtype)

    for steps in (1, 5, 10):
        calls.clear()
        out = run(sampler, oracle, x_T if sampler in ODE_SAMPLERS else x_T.float(), steps, schedule)
        assert len(calls) == steps and all(t.shape == (3,) for t in calls)
        assert (out.double() - x0).abs().max() < 1e-4, (sampler, steps)


def test_gaussian_data_closed_form_second_order_beats_ddim():
    """Data x0 ~ N(0, s²): ε̂ is exact in closed form and the probability-flow ODE maps x_T to
    x_T·s/√(ᾱ_T s² + 1 - ᾱ_T). Errors fall with steps; the 2nd-order solvers beat DDIM at equal nfe;
    one DPM-Solver++ / UniPC step is one DDIM step."""
    train = SCHEDULES["sdseg"][0]
    a_bar, s2 = train.alphas_cumprod.double(), 0.25
    x_T = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = x_T * s2**0.5 / (a_bar[-1] * s2 + 1 - a_bar[-1]).sqrt()

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = a_bar[t].view(-1, 1, 1, 1)
        return ((1 - a).sqrt() * x.double() / (a * s2 + 1 - a)).to(x.dtype)

    err = {(name, k): float((run(name, score, x_T if name in ODE_SAMPLERS else x_T.float(), k, "sdseg").double()
                             - exact).abs().mean())
           for name in ("ddim", *ODE_SAMPLERS) for k in (1, 10, 50)}
    for name in ("ddim", *ODE_SAMPLERS):
        assert err[name, 50] < err[name, 10] < err[name, 1], err
    for name in ODE_SAMPLERS:
        assert abs(err[name, 1] - err["ddim", 1]) < 1e-5, err
        assert err[name, 50] < 0.8 * err["ddim", 50] and err[name, 10] < err["ddim", 10], err


@pytest.mark.parametrize("sampler", ODE_SAMPLERS)
def test_medsegdiff_ode_budgets_one_denoiser_pass_per_step_per_member(sampler):
    task = Task(in_channels=1, num_classes=1, image_size=(32, 32))
    torch.manual_seed(0)
    method = MedSegDiffMethod(MedSegDiffMethod.profiles()["tiny"], task)
    method.train()
    for seed in range(2):
        method.training_step(synthetic_batch(task, 2, seed=seed))
    method.eval()
    rows, ts = [], []

    def record(_module, args) -> None:
        rows.append(args[0].shape[0])
        ts.append(int(args[1].max()))

    hook = method.denoiser.register_forward_pre_hook(record)
    images = synthetic_batch(task, 2)["image"]
    try:
        with torch.inference_mode():
            out = method.predict(images, Budget(5, 3, sampler), torch.Generator().manual_seed(0))
            again = method.predict(images, Budget(5, 3, sampler), torch.Generator().manual_seed(0))
    finally:
        hook.remove()
    assert rows[:5] == [3 * 2] * 5 and len(rows) == 10 and out.nfe == 15
    assert ts[:5] == strided_timesteps(100, 5)
    assert torch.isfinite(out.probs).all() and 0 <= out.probs.min() and out.probs.max() <= 1
    assert torch.equal(out.probs, again.probs)


def test_methods_import_diffusers_lazily():
    """diffusers costs seconds to import: no method module imports it at module level (only inside the
    ODE samplers and the diffusers-layout weight reader)."""
    methods = Path(__file__).resolve().parents[1] / "methods"
    eager = []
    for path in methods.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module-level statements only
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            eager += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("diffusers", "safetensors")]
    assert not eager, eager


def test_clipped_ddim_step_uses_the_noise_of_the_clipped_x0():
    """guided-diffusion's DDIM (MedSegDiff's code base): x_prev = √ᾱ_prev·clip(x̂0) + √(1-ᾱ_prev)·ε(clip(x̂0)).
    MONAI's stock step pairs clip(x̂0) with the raw ε̂ instead."""
    scheduler = SCHEDULES["medsegdiff"][1]()
    scheduler.set_timesteps(10)
    t, prev = 49, 39
    g = torch.Generator().manual_seed(0)
    x_t, eps = torch.randn(2, 1, 8, 8, generator=g), 3 * torch.randn(2, 1, 8, 8, generator=g)
    a, a_prev = scheduler.alphas_cumprod[t], scheduler.alphas_cumprod[prev]
    x0 = ((x_t - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
    assert (x0.abs() == 1).float().mean() > 0.2, "the test needs x̂0 outside [-1, 1]"
    expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * (x_t - a.sqrt() * x0) / (1 - a).sqrt()
    out, pred_x0 = scheduler.step(eps, t, x_t)
    assert torch.allclose(pred_x0, x0, atol=1e-5) and torch.allclose(out, expected, atol=1e-5)
