"""SDSeg: the shared conformance checks plus the method's own parts (mask autoencoder, scale
factor, single-step estimate, local autoencoder weights, multi-class, EMA) and a learning check."""

import copy

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from segarena.methods.sdseg import SDSegMethod
from segarena.methods.sdseg.autoencoder import ae_output_to_probs, masks_to_ae_input
from segarena.methods.sdseg.latent import build_scheduler, estimate_clean_latent
from segarena.platform.conformance import MethodConformance, synthetic_batch
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
        for budget, n_calls in ((Budget(1, 1), 1), (Budget(1, 4), 1), (Budget(3, 2, "ddim"), 3)):
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


def test_local_autoencoder_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SDSegMethod({**TINY, "ae_checkpoint": str(tmp_path / "missing.pt")}, TASK)
    source = SDSegMethod(TINY, TASK)
    good = tmp_path / "ae.pt"
    torch.save({"state_dict": source.ae.state_dict()}, good)
    method = SDSegMethod({**TINY, "ae_checkpoint": str(good)}, TASK)
    assert method.stage == 2, "loaded autoencoder should skip stage 1"
    for a, b in zip(method.ae.state_dict().values(), source.ae.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(method.cond.encoder.blocks[-1].conv.weight, source.ae.encoder.blocks[-1].conv.weight)
    torch.save(SDSegMethod({**TINY, "ae_channels": [8, 16, 16]}, TASK).ae.state_dict(), tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match"):
        SDSegMethod({**TINY, "ae_checkpoint": str(tmp_path / "bad.pt")}, TASK)


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


def test_ema_weights_are_used_for_prediction():
    method = past_stage_one(diffusion_steps=3, ema_decay=0.5)
    images = synthetic_batch(TASK, 2)["image"]
    ema_out = predict(method, images, Budget())
    raw = copy.deepcopy(method)
    raw.ema.decay = 0.0
    assert not torch.equal(ema_out.probs, predict(raw, images, Budget()).probs)
    for key in ("unet", "cond"):
        getattr(raw, key).load_state_dict(method.ema.shadow[key], strict=False)
    assert torch.equal(ema_out.probs, predict(raw, images, Budget()).probs)
