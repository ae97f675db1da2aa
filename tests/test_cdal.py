"""cDAL: the shared conformance checks plus the paper's moving parts (t-conditioned D, spatial
attention on G's input, two optimizers, lazy R1, the VP posterior) and a learning check."""

import pytest
import torch

from segarena.methods.cdal import CDALMethod
from segarena.methods.cdal.layers import Resample
from segarena.methods.cdal.schedule import VPSchedule
from segarena.platform.conformance import MethodConformance, synthetic_batch
from segarena.platform.plugin import Budget, Task

TASK = Task(in_channels=1, num_classes=1, image_size=(64, 64))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convs gain nothing from 2 intra-op threads, and on the shared, oversubscribed 2-core box
    2 OpenMP threads make a 0.2 s training step take 5-15 s; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TestCDALConformance(MethodConformance):
    method_cls = CDALMethod


def make(task: Task = TASK, seed: int = 0, **overrides) -> CDALMethod:
    torch.manual_seed(seed)
    return CDALMethod({**CDALMethod.profiles()["tiny"], **overrides}, task)


def real_pair(method: CDALMethod, seed: int = 0):
    x0 = method.target(synthetic_batch(TASK, 2, seed)["mask"])
    t = torch.tensor([0, 1])
    x_t, x_next = method.schedule.q_sample_pairs(x0, t, generator=torch.Generator().manual_seed(seed))
    return x0, t, x_t, x_next


def test_budgets_are_t_steps_times_ensemble():
    assert [b.nfe for b in CDALMethod.budgets("tiny")] == [2, 6]
    assert [b.nfe for b in CDALMethod.budgets("paper")] == [4, 20]  # MoNuSeg: 4 x 5 (metrics.md §4)
    assert CDALMethod.budgets("paper_cxr")[-1].nfe == 60  # CXR: 2 x 30
    with pytest.raises(ValueError, match="T=2"):
        make().predict(torch.zeros(1, 1, 64, 64), Budget(steps=4, ensemble=1, sampler="posterior"))


def test_schedule_posterior_is_deterministic_at_zero_and_noisy_above():
    s = VPSchedule(4)
    assert torch.all(s.a_cum[1:] < s.a_cum[:-1]) and s.a_cum[0] > 0.999 and s.a_cum[-1] < 0.05
    x0, x_next = torch.rand(3, 1, 8, 8) * 2 - 1, torch.randn(3, 1, 8, 8)
    zero = torch.zeros(3, dtype=torch.long)
    torch.testing.assert_close(s.posterior_sample(x0, x_next, zero), x0)  # x_0 = x̂0, no noise
    one = torch.ones(3, dtype=torch.long)
    a = s.posterior_sample(x0, x_next, one, torch.Generator().manual_seed(0))
    b = s.posterior_sample(x0, x_next, one, torch.Generator().manual_seed(1))
    assert not torch.allclose(a, b)


def test_discriminator_logits_depend_on_t():
    method = make()
    _, _, x_t, x_next = real_pair(method)
    with torch.no_grad():
        d0 = method.discriminator(x_t, torch.tensor([0, 0]), x_next)
        d1 = method.discriminator(x_t, torch.tensor([1, 1]), x_next)
    assert d0.shape == (2,)
    assert (d0 - d1).abs().min() > 1e-6, (d0, d1)


@pytest.mark.parametrize("norm", ["none", "sigmoid", "minmax"])
def test_attention_map_has_mask_size_and_changes_generator_input(norm):
    method = make(attn_norm=norm)
    x0, t, x_t, x_next = real_pair(method)
    attn = method.attention_map(x_t, t, x_next)
    assert attn.shape == (2, 1, 64, 64) and torch.isfinite(attn).all()
    assert attn.std() > 0
    if norm == "sigmoid":
        assert attn.min() > 0 and attn.max() < 1
    if norm == "minmax":
        torch.testing.assert_close(attn.amin((2, 3)), torch.zeros(2, 1))
        torch.testing.assert_close(attn.amax((2, 3)), torch.ones(2, 1))
    attended, used = method.generator_input(x0, t, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    seen = method.schedule.q_sample_pairs(x0, t, generator=g)  # the real pair D's features come from
    torch.testing.assert_close(used, method.attention_map(seen[0], t, seen[1]))
    method.attention_map = lambda *_: torch.ones(2, 1, 64, 64)  # attention off: x0 re-noised as is
    plain, _ = method.generator_input(x0, t, torch.Generator().manual_seed(5))
    torch.testing.assert_close(plain, method.schedule.q_sample_pairs(x0, t, generator=g)[1])
    assert (attended - plain).abs().max() > 1e-3


@pytest.mark.parametrize("adv_weight_g", [0.0, 0.5])
def test_each_optimizer_changes_only_its_own_module(adv_weight_g):
    method = make(adv_weight_g=adv_weight_g).train()
    own = {"opt_g": method.generator, "opt_d": method.discriminator}
    changed: dict[str, set[str]] = {}
    for name, opt in method.optimizers().items():
        snap: dict[str, torch.Tensor] = {}

        def pre(_opt, _args, _kwargs, snap=snap):
            snap.update({f"{k}.{n}": p.detach().clone() for k, m in method.modules().items()
                         for n, p in m.named_parameters()})

        def post(_opt, _args, _kwargs, name=name, snap=snap):
            changed[name] = {n for k, m in method.modules().items() for pn, p in m.named_parameters()
                             if not torch.equal(snap[n := f"{k}.{pn}"], p)}

        opt.register_step_pre_hook(pre)
        opt.register_step_post_hook(post)
    logs = method.training_step(synthetic_batch(TASK, 2))
    assert ("g_adv" in logs) == (adv_weight_g > 0)
    for name, module in own.items():
        prefix = "generator." if module is method.generator else "discriminator."
        assert changed[name], f"{name} changed nothing"
        assert all(n.startswith(prefix) for n in changed[name]), f"{name} touched another module"
    assert all(p.requires_grad for p in method.discriminator.parameters())  # unfrozen after the G step


def test_r1_penalty_is_positive_on_real_pairs_and_lazy():
    method = make()
    _, t, x_t, x_next = real_pair(method)
    r1 = method.r1_penalty(x_t.requires_grad_(True), t, x_next)
    assert torch.isfinite(r1) and r1 > 0
    method.train()
    logs = [method.training_step(synthetic_batch(TASK, 2, s))["r1"] for s in range(2)]
    assert logs[0] > 0 and logs[1] == 0  # lazy_reg = 4: iterations 0, 4, 8, …


def test_multiclass_exclusive_masks_do_not_overlap():
    task = Task(in_channels=1, num_classes=2, image_size=(32, 32))
    method = make(task, attn_resolutions=[8])
    method.train()
    method.training_step(synthetic_batch(task, 2))
    method.eval()
    with torch.inference_mode():
        out = method.predict(synthetic_batch(task, 2)["image"], CDALMethod.budgets("tiny")[1],
                             torch.Generator().manual_seed(0))
    assert out.mask.shape == (2, 2, 32, 32) and out.members.shape == (3, 2, 2, 32, 32)
    assert int(out.mask.sum(1).max()) <= 1 and int(out.members.sum(2).max()) <= 1


def test_resampling_keeps_constants_and_doubles_or_halves():
    x = torch.ones(1, 3, 16, 16)
    for kind in ("fir", "avgpool"):
        down, up = Resample("down", kind)(x), Resample("up", kind)(x)
        assert down.shape[-1] == 8 and up.shape[-1] == 32
        torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]))
        torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.ones_like(up[..., 2:-2, 2:-2]))


def test_cdal_generator_mse_halves_on_synthetic_discs():
    method = make(seed=1).train()
    batch = synthetic_batch(TASK, 8, seed=1)
    mse = [method.training_step(batch)["g_mse"] for _ in range(20)]
    assert min(mse[-3:]) < 0.5 * mse[0], [round(m, 3) for m in mse]


def test_input_pyramid_combines_with_features_so_it_sees_the_image():
    """NCSN++ residual input pyramid: from level 1 on, the pyramid is the combined feature
    (down(pyramid) + h)/√2, so its input at levels ≥ 1 depends on the image (issue 15)."""
    method = make(ch_mult=[1, 2, 2, 2])
    gen = method.generator
    seen: dict[int, list[torch.Tensor]] = {}
    hooks = [stage["pyramid"].register_forward_pre_hook(
        lambda _m, args, lvl=lvl: seen.setdefault(lvl, []).append(args[0].detach().clone()))
        for lvl, stage in enumerate(gen.down) if "pyramid" in stage]
    x_next, t, z = torch.randn(1, 1, 64, 64), torch.tensor([1]), torch.randn(1, method.hparams["nz"])
    images = synthetic_batch(TASK, 2, seed=3)["image"]
    with torch.no_grad():
        for image in images:
            gen(x_next, t, image[None], z)
    for h in hooks:
        h.remove()
    assert sorted(seen) == [0, 1, 2]
    torch.testing.assert_close(seen[0][0], seen[0][1])  # level 0: x_{t+1} itself
    torch.testing.assert_close(seen[0][0], x_next)
    for lvl in (1, 2):
        assert (seen[lvl][0] - seen[lvl][1]).abs().max() > 1e-4, f"pyramid input at level {lvl} ignores the image"


def test_discriminator_feeds_the_raw_last_block_to_minibatch_stddev(monkeypatch):
    """The official head: minibatch-stddev on the raw last-block output (no LeakyReLU before it)."""
    import segarena.methods.cdal.discriminator as disc

    method = make()
    _, t, x_t, x_next = real_pair(method)
    captured = []
    real_mbstd = disc.minibatch_stddev
    monkeypatch.setattr(disc, "minibatch_stddev", lambda h, *a: captured.append(h) or real_mbstd(h, *a))
    with torch.no_grad():
        last = method.discriminator.features(x_t, t, x_next)[-1]
        method.discriminator(x_t, t, x_next)
    assert last.min() < 0  # a LeakyReLU in between would change the negative part
    torch.testing.assert_close(captured[0], last)


def test_generator_time_mlp_is_four_nf_wide_in_every_profile():
    """NCSN++: Linear(nf → 4nf) → SiLU → Linear(4nf → 4nf), independent of D's t_emb (CXR: 128 at nf 32)."""
    from segarena.methods.cdal.generator import CDALGenerator
    from segarena.methods.cdal.method import _GEN_KEYS

    for name, p in CDALMethod.profiles().items():
        keys = {k: p[k] for k in _GEN_KEYS}
        gen = CDALGenerator(1, 1, 64 if name == "tiny" else 256, **keys)
        first, second = gen.time.mlp[0], gen.time.mlp[2]
        assert (first.in_features, first.out_features, second.out_features) == (p["nf"], 4 * p["nf"], 4 * p["nf"])
        assert gen.down[0]["blocks"][0].temb.in_features == 4 * p["nf"]
    assert CDALMethod.profiles()["paper_cxr"]["nf"] == 32 and CDALMethod.profiles()["paper_cxr"]["t_emb"] == 256


def test_cosine_lr_is_on_at_paper_off_at_tiny_and_matches_torch_per_epoch():
    profiles = CDALMethod.profiles()
    assert profiles["paper"]["lr_schedule"] == profiles["paper_cxr"]["lr_schedule"] == "cosine"
    assert profiles["tiny"]["lr_schedule"] == "constant"
    assert (profiles["paper"]["lr_t_max"], profiles["paper"]["lr_eta_min"]) == (500, 1e-5)
    method = make(lr_schedule="cosine", lr_t_max=3, lr_epoch_steps=2, lr_g=2e-3, lr_d=1e-3)
    ref = {}
    for name, base in (("g", 2e-3), ("d", 1e-3)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3, eta_min=1e-5)
        ref[name] = []
        for _epoch in range(9):  # past T_max: torch's cosine turns back up
            ref[name] += [opt.param_groups[0]["lr"]] * 2  # two steps per epoch
            opt.step()
            sched.step()
    ours = [method.learning_rates(i) for i in range(18)]
    assert [g for g, _ in ours] == pytest.approx(ref["g"], rel=1e-9)
    assert [d for _, d in ours] == pytest.approx(ref["d"], rel=1e-9)
    method.train()
    logs = [method.training_step(synthetic_batch(TASK, 2, s)) for s in range(3)]
    assert [lg["lr_g"] for lg in logs] == pytest.approx(ref["g"][:3])
    assert method.opt_g.param_groups[0]["lr"] == pytest.approx(ref["g"][2])
    assert method.opt_d.param_groups[0]["lr"] == pytest.approx(ref["d"][2])
    tiny = make().train()
    for s in range(3):
        assert tiny.training_step(synthetic_batch(TASK, 2, s))["lr_g"] == profiles["tiny"]["lr_g"]
    with pytest.raises(ValueError, match="lr_schedule"):
        make(lr_schedule="step")
