"""SDSeg: the shared conformance checks plus the method's own parts (mask autoencoder, scale
factor, single-step estimate, samplers, local autoencoder weights in three layouts, multi-class,
EMA) and a learning check."""

import copy
import re

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from segarena.methods.common.ddim import strided_timesteps
from segarena.methods.sdseg import SDSegMethod
from segarena.methods.sdseg.autoencoder import ae_output_to_probs, masks_to_ae_input
from segarena.methods.sdseg.latent import build_scheduler, estimate_clean_latent
from segarena.platform.conformance import MethodConformance, synthetic_batch
from segarena.platform.errors import SpecError
from segarena.platform.plugin import Budget, Task

TASK = Task(in_channels=1, num_classes=1, image_size=(64, 64))
TINY = SDSegMethod.profiles()["tiny"]


class TestSDSegConformance(MethodConformance):
    method_cls = SDSegMethod


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine a second thread mostly waits at barriers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def dice(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of boolean masks (N, ...)."""
    pred, gt = pred.flatten(1), gt.flatten(1)
    return 2 * (pred & gt).sum(1) / (pred.sum(1) + gt.sum(1)).clamp_min(1)


def predict(method: SDSegMethod, images: torch.Tensor, budget: Budget, seed: int = 0):
    method.eval()
    with torch.inference_mode():
        return method.predict(images, budget, torch.Generator().manual_seed(seed))


def past_stage_one(task: Task = TASK, diffusion_steps: int = 1, **overrides) -> SDSegMethod:
    """A tiny method one autoencoder step in, then ``diffusion_steps`` latent diffusion steps."""
    torch.manual_seed(0)
    method = SDSegMethod({**TINY, "ae_steps": 1, **overrides}, task).train()
    for step in range(1 + diffusion_steps):
        method.training_step(synthetic_batch(task, 2, seed=step))
    return method


@pytest.fixture(scope="module")
def stage_one() -> tuple[SDSegMethod, dict[str, torch.Tensor]]:
    """The tiny profile's whole stage 1 on 8 synthetic images (batches of 4)."""
    torch.manual_seed(0)
    method = SDSegMethod(TINY, TASK).train()
    data = synthetic_batch(TASK, 8, seed=1)
    for step in range(TINY["ae_steps"]):
        assert method.stage == 1
        half = slice(4 * (step % 2), 4 * (step % 2) + 4)
        method.training_step({"image": data["image"][half], "mask": data["mask"][half]})
    return method, data


def test_autoencoder_round_trip_after_stage_one(stage_one):
    method, _ = stage_one
    assert method.stage == 2 and not any(p.requires_grad for p in method.ae.parameters())
    masks = synthetic_batch(TASK, 16, seed=50)["mask"][:, 0] > 0  # masks never seen in training
    with torch.no_grad():
        z = method.ae.encode_stage_2_inputs(masks_to_ae_input(masks))
        assert z.shape == (16, TINY["latent_channels"], 16, 16)
        rec = ae_output_to_probs(method.ae.decode_stage_2_outputs(z)) > 0.5
    scores = dice(rec, masks)
    assert scores.mean() >= 0.9, scores


def test_learns_synthetic_discs(stage_one):
    method, data = copy.deepcopy(stage_one[0]), stage_one[1]
    untrained = dice(predict(method, data["image"], Budget()).mask, data["mask"] > 0).mean()
    method.train()
    losses = []
    for step in range(150):
        half = slice(4 * (step % 2), 4 * (step % 2) + 4)
        losses.append(method.training_step({"image": data["image"][half], "mask": data["mask"][half]})["loss"])
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    trained = dice(predict(method, data["image"], Budget()).mask, data["mask"] > 0).mean()
    assert trained > 0.4 and trained > untrained + 0.2, (float(untrained), float(trained))


def test_scale_factor_measured_once_and_restored_by_checkpoint():
    method = past_stage_one(diffusion_steps=2)
    assert method.stage == 2 and method.scale_measured
    scale = method.scale_factor
    assert scale != 1.0 and scale > 0
    method.training_step(synthetic_batch(TASK, 2, seed=9))
    assert method.scale_factor == scale, "scale factor re-measured after the first diffusion batch"
    state = copy.deepcopy(method.state_dict())
    assert state["extra"]["scale_factor"] == scale and state["extra"]["stage"] == 2
    torch.manual_seed(1)
    other = SDSegMethod({**TINY, "ae_steps": 1}, TASK)
    assert other.stage == 1 and other.scale_factor == 1.0
    other.load_state_dict(state)
    assert other.scale_factor == scale and other.stage == 2
    assert not any(p.requires_grad for p in other.ae.parameters())
    images = synthetic_batch(TASK, 2, seed=5)["image"]
    a, b = predict(method, images, Budget(1, 2)), predict(other, images, Budget(1, 2))
    assert torch.equal(a.probs, b.probs)
    other.training_step(synthetic_batch(TASK, 2, seed=10))
    assert other.scale_factor == scale


def test_condition_encoder_starts_from_the_autoencoder_encoder():
    method = past_stage_one(diffusion_steps=0)
    ae_first = method.ae.encoder.blocks[0].conv.weight
    cond_first = method.cond.encoder.blocks[0].conv.weight  # grey image: 1 input channel instead of 3
    assert cond_first.shape[1] == 1 and ae_first.shape[1] == 3
    assert torch.allclose(cond_first[:, 0], ae_first.sum(1))
    assert torch.equal(method.cond.encoder.blocks[1].conv1.conv.weight, method.ae.encoder.blocks[1].conv1.conv.weight)


def test_single_step_calls_the_denoiser_once_per_member():
    method = SDSegMethod(TINY, TASK)
    calls = []
    handle = method.unet.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    images = synthetic_batch(TASK, 3)["image"]
    try:
        for budget, n_calls in ((Budget(1, 1), 1), (Budget(1, 4), 1), (Budget(4, 2, "ddim"), 4)):
            calls.clear()
            out = predict(method, images, budget)
            assert len(calls) == n_calls and all(rows == budget.ensemble * 3 for rows in calls), calls
            assert out.nfe == budget.nfe and out.extra_calls == {"decoder": budget.ensemble, "condition_encoder": 1}
            assert out.members.shape == (budget.ensemble, 3, 1, 64, 64)
    finally:
        handle.remove()


def test_members_differ_and_seed_controls_them():
    method = past_stage_one(diffusion_steps=2)
    images = synthetic_batch(TASK, 2)["image"]
    a = predict(method, images, Budget(1, 2), seed=0)
    b = predict(method, images, Budget(1, 2), seed=1)
    assert not torch.equal(a.probs, b.probs)
    assert torch.equal(a.mask, predict(method, images, Budget(1, 2), seed=0).mask)


def test_clean_latent_estimate_matches_monai_scheduler():
    scheduler = build_scheduler(TINY)
    reference = DDPMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015,
                              beta_end=0.0155, prediction_type="epsilon", clip_sample=False)
    assert torch.allclose(scheduler.alphas_cumprod, reference.alphas_cumprod)
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(6, 4, 8, 8, generator=g), torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    z_t = reference.add_noise(z0, eps, t)
    a = reference.alphas_cumprod[t].view(-1, 1, 1, 1)
    estimate = estimate_clean_latent(scheduler.alphas_cumprod, z_t, eps, t)
    assert torch.allclose(estimate, (z_t - (1 - a).sqrt() * eps) / a.sqrt())
    assert torch.allclose(estimate, z0, atol=1e-3)
    wrong = torch.randn(6, 4, 8, 8, generator=g)  # and MONAI's own x0 from step() for a wrong ε
    reference.set_timesteps(1000)
    for i in (2, 5):
        _, pred_x0 = reference.step(wrong[i:i + 1], int(t[i]), z_t[i:i + 1])
        ours = estimate_clean_latent(scheduler.alphas_cumprod, z_t[i:i + 1], wrong[i:i + 1], t[i:i + 1])
        assert torch.allclose(ours, pred_x0, rtol=1e-4, atol=1e-4)


def test_ddim_timesteps_equal_the_strided_schedule():
    """MONAI's stock DDIM told the model t = 888, 777, ..., 0 while stepping the latent by 100 from 999."""
    method = SDSegMethod(TINY, TASK)
    seen = []
    handle = method.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[1].unique().tolist()))
    images = synthetic_batch(TASK, 2)["image"]
    try:
        for sampler in ("ddim", "ancestral", "dpmpp2m", "unipc"):
            seen.clear()
            predict(method, images, Budget(10, 1, sampler))
            assert [t for (t,) in seen] == strided_timesteps(1000, 10) == list(range(999, 0, -100)), (sampler, seen)
    finally:
        handle.remove()


@pytest.mark.parametrize("sampler", ["ddim", "ancestral", "dpmpp2m", "unipc"])
def test_multistep_samplers_one_pass_per_step_and_seeded(sampler):
    method = past_stage_one(diffusion_steps=2)
    rows = []
    handle = method.unet.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    images = synthetic_batch(TASK, 3)["image"]
    try:
        a = predict(method, images, Budget(5, 2, sampler), seed=0)
    finally:
        handle.remove()
    assert rows == [2 * 3] * 5 and a.nfe == 10
    assert torch.isfinite(a.probs).all() and a.probs.min() >= 0 and a.probs.max() <= 1
    assert torch.equal(a.probs, predict(method, images, Budget(5, 2, sampler), seed=0).probs)
    assert not torch.equal(a.probs, predict(method, images, Budget(5, 2, sampler), seed=1).probs)


def test_ancestral_is_ddim_with_eta_one():
    """η = 1 adds noise (two runs from the same z_T differ only through it), η = 0 does not."""
    method = past_stage_one(diffusion_steps=2)
    images = synthetic_batch(TASK, 2)["image"]
    ddim = predict(method, images, Budget(10, 1, "ddim"), seed=3)
    ancestral = predict(method, images, Budget(10, 1, "ancestral"), seed=3)
    assert not torch.equal(ddim.probs, ancestral.probs)
    with pytest.raises(ValueError, match="must divide"):
        predict(method, images, Budget(7, 1, "ancestral"))
    with pytest.raises(ValueError, match="unknown sampler"):
        predict(method, images, Budget(5, 1, "plms"))


# autoencoder weights in three layouts -----------------------------------------------------------
AE_HP = {**TINY, "ae_attention": True}  # LDM autoencoders always have the mid-block attention


def diffusers_autoencoder(layers: int = 1):
    """An independent reference: diffusers' own AutoencoderKL at the tiny profile's size, perturbed
    so that no weight is at its (often zero) initial value."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(16, 32, 32), layers_per_block=layers,
        latent_channels=4, norm_num_groups=8).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def compvis_state(model) -> dict[str, torch.Tensor]:
    """The LDM (CompVis) key layout of a diffusers AutoencoderKL, attention as 1x1 convs; certified
    below by diffusers' own LDM → diffusers converter."""
    levels = len(model.config.block_out_channels)
    out = {}
    for key, value in model.state_dict().items():
        k = key.replace("mid_block.resnets.0", "mid.block_1").replace("mid_block.resnets.1", "mid.block_2")
        k = k.replace("mid_block.attentions.0", "mid.attn_1").replace("conv_norm_out", "norm_out")
        k = k.replace("conv_shortcut", "nin_shortcut").replace("downsamplers.0", "downsample")
        k = k.replace("upsamplers.0", "upsample").replace(".resnets.", ".block.")
        k = re.sub(r"encoder\.down_blocks\.(\d+)", r"encoder.down.\1", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)", lambda m: f"decoder.up.{levels - 1 - int(m[1])}", k)
        for theirs, ours in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"),
                             ("to_out.0", "proj_out")):
            k = k.replace(f"attn_1.{theirs}.", f"attn_1.{ours}.")
        out[k] = value[..., None, None] if "attn_1" in k and k.endswith("weight") and value.dim() == 2 else value
    return out


def assert_reproduces(ae, model) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dist = model.encode(x).latent_dist
        mu, sigma = ae.encode(x)
        assert (mu - dist.mean).abs().max() < 1e-5 and (sigma - dist.std).abs().max() < 1e-5
        assert (ae.decode(mu) - model.decode(dist.mean).sample).abs().max() < 1e-4


def assert_pretrained_premise(method: SDSegMethod, layout: str) -> None:
    """Frozen AE, stage 1 skipped, condition encoder copied from the AE encoder (8 channels → new 1x1 conv)."""
    assert method.stage == 2 and not any(p.requires_grad for p in method.ae.parameters())
    assert not method.ae.training or not method.train().ae.training
    ours, theirs = method.cond.encoder.state_dict(), method.ae.encoder.state_dict()
    for k in ours:
        if k != "blocks.0.conv.weight":  # grey image: the RGB first conv summed over its inputs
            assert torch.equal(ours[k], theirs[k]), k
    assert torch.allclose(ours["blocks.0.conv.weight"][:, 0], theirs["blocks.0.conv.weight"].sum(1))
    assert method.cond.proj.in_channels == 8 and method.cond.proj.out_channels == 4
    tags = method.card_tags()
    assert tags["pretrained"] == "autoencoder" and tags["ae_weights_layout"] == layout


@pytest.mark.parametrize("layers", [1, 2])
def test_diffusers_layout_loads_and_reproduces_the_autoencoder(tmp_path, layers):
    model = diffusers_autoencoder(layers)
    torch.save(model.state_dict(), tmp_path / "vae.pt")
    model.save_pretrained(tmp_path / "vae")  # safetensors folder
    hp = {**AE_HP, "ae_res_blocks": layers}
    for source in (tmp_path / "vae.pt", tmp_path / "vae"):
        method = SDSegMethod({**hp, "ae_weights": str(source)}, TASK)
        assert_reproduces(method.ae, model)
        assert_pretrained_premise(method, "diffusers")
    with pytest.raises(SpecError, match="does not fit"):
        SDSegMethod({**hp, "ae_res_blocks": layers + 1, "ae_weights": str(tmp_path / "vae.pt")}, TASK)


def test_compvis_layout_loads_and_reproduces_the_autoencoder(tmp_path):
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    model = diffusers_autoencoder()
    ldm = compvis_state(model)
    full = {**{f"first_stage_model.{k}": v for k, v in ldm.items()},  # a whole LDM/SDSeg checkpoint
            "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(3), "cond_stage_model.x": torch.zeros(1)}
    back = convert_ldm_vae_checkpoint(full, dict(model.config))
    assert set(back) == set(model.state_dict())
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items()), "test's CompVis layout is wrong"
    torch.save({"state_dict": full}, tmp_path / "ldm.ckpt")
    torch.save({**ldm, "loss.discriminator.main.0.weight": torch.zeros(2)}, tmp_path / "kl.ckpt")  # bare AE file
    for name in ("ldm.ckpt", "kl.ckpt"):
        method = SDSegMethod({**AE_HP, "ae_weights": str(tmp_path / name)}, TASK)
        assert_reproduces(method.ae, model)
        assert_pretrained_premise(method, "compvis")
    with pytest.raises(SpecError, match="ae_attention"):
        SDSegMethod({**TINY, "ae_weights": str(tmp_path / "kl.ckpt")}, TASK)
    del ldm["decoder.up.0.block.1.conv2.weight"]
    torch.save(ldm, tmp_path / "broken.ckpt")
    with pytest.raises(SpecError, match=r"1 missing e\.g\. \['decoder\.up\.0\.block\.1\.conv2\.weight'\]"):
        SDSegMethod({**AE_HP, "ae_weights": str(tmp_path / "broken.ckpt")}, TASK)


def test_monai_layout_and_bad_files(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        SDSegMethod({**TINY, "ae_weights": str(tmp_path / "missing.pt")}, TASK)
    source = SDSegMethod(TINY, TASK)
    assert source.card_tags() == {"pretrained": "none"} and source.stage == 1
    good = tmp_path / "ae.pt"
    torch.save({"state_dict": source.ae.state_dict()}, good)
    method = SDSegMethod({**TINY, "ae_weights": str(good)}, TASK)
    assert method.stage == 2, "loaded autoencoder should skip stage 1"
    for a, b in zip(method.ae.state_dict().values(), source.ae.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(method.cond.encoder.blocks[-1].conv.weight, source.ae.encoder.blocks[-1].conv.weight)
    assert method.card_tags()["ae_weights_layout"] == "monai"
    torch.save(SDSegMethod({**TINY, "ae_channels": [8, 16, 16]}, TASK).ae.state_dict(), tmp_path / "bad.pt")
    with pytest.raises(SpecError, match="does not match"):
        SDSegMethod({**TINY, "ae_weights": str(tmp_path / "bad.pt")}, TASK)
    torch.save({"x.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(SpecError, match="cannot tell the key layout"):
        SDSegMethod({**TINY, "ae_weights": str(tmp_path / "other.pt")}, TASK)


def test_pretrained_autoencoder_survives_a_checkpoint(tmp_path):
    """The LDM-shaped AE is rebuilt from the file on resume, so a harness checkpoint loads into it."""
    model = diffusers_autoencoder()
    torch.save(model.state_dict(), tmp_path / "vae.pt")
    hp = {**AE_HP, "ae_weights": str(tmp_path / "vae.pt")}
    method = SDSegMethod(hp, TASK).train()
    method.training_step(synthetic_batch(TASK, 2, seed=1))
    state = copy.deepcopy(method.state_dict())
    other = SDSegMethod(hp, TASK)
    other.load_state_dict(state)
    images = synthetic_batch(TASK, 2, seed=5)["image"]
    assert torch.equal(predict(method, images, Budget()).probs, predict(other, images, Budget()).probs)


def test_multiclass_one_pass_per_class_and_exclusive_masks():
    task = Task(in_channels=1, num_classes=3, image_size=(32, 32))
    method = past_stage_one(task)
    rows = []
    handle = method.unet.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        out = predict(method, synthetic_batch(task, 2)["image"], Budget(1, 2))
    finally:
        handle.remove()
    assert rows == [2 * 2 * 3] and out.nfe == 2 * 3
    assert out.mask.shape == (2, 3, 32, 32) and out.members.shape == (2, 2, 3, 32, 32)
    assert int(out.mask.sum(1).max()) <= 1 and int(out.members.sum(2).max()) <= 1


def test_ema_weights_are_used_for_prediction_and_cover_the_unet_only():
    method = past_stage_one(diffusion_steps=3, ema_decay=0.5)
    assert set(method.ema.shadow) == {"unet"}, "official LitEma averages the UNet, not the condition encoder"
    images = synthetic_batch(TASK, 2)["image"]
    ema_out = predict(method, images, Budget())
    raw = copy.deepcopy(method)
    raw.ema.decay = 0.0
    assert not torch.equal(ema_out.probs, predict(raw, images, Budget()).probs)
    raw.unet.load_state_dict(method.ema.shadow["unet"], strict=False)
    assert torch.equal(ema_out.probs, predict(raw, images, Budget()).probs)
