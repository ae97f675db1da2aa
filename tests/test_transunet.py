"""TransUNet baseline: shared conformance, shapes, the official parameter count, checkpoints, learning."""

import pytest
import torch

from segarena.methods.transunet import TransUNetMethod
from segarena.methods.transunet.model import TransUNet2D
from segarena.platform.conformance import MethodConformance, synthetic_batch
from segarena.platform.plugin import Task

TINY = TransUNetMethod.profiles()["tiny"]


class TestTransUNetConformance(MethodConformance):
    method_cls = TransUNetMethod


def official_r50_vit_b16_params(n_classes: int = 9, img: int = 224) -> int:
    """Parameter count of Beckschen/TransUNet ``VisionTransformer(R50-ViT-B_16)``, from its architecture
    (vit_seg_modeling*.py): 3-channel BiT ResNetV2 (3, 4, 9), ViT-B, CUP (256, 128, 64, 16), n_skip 3."""
    gn = 2  # GroupNorm / LayerNorm / BatchNorm: weight + bias per channel
    cnn, cin = 3 * 64 * 49 + gn * 64, 64  # root StdConv 7x7 (no bias) + GN
    for stage, units in enumerate((3, 4, 9)):
        cmid, cout = 64 * 2**stage, 256 * 2**stage
        for u in range(units):
            c = cin if u == 0 else cout
            cnn += c * cmid + cmid * cmid * 9 + cmid * cout + gn * (2 * cmid + cout)
            cnn += (cin * cout + gn * cout) if u == 0 else 0  # projection shortcut
        cin = cout
    h, mlp, tokens = 768, 3072, (img // 16) ** 2
    embed = 1024 * h + h + tokens * h  # 1x1 patch conv (with bias) + positions
    block = 4 * (h * h + h) + 2 * h * mlp + mlp + h + 2 * gn * h  # q, k, v, out; fc1, fc2; two LayerNorms
    vit = embed + 12 * block + gn * h
    conv_bn = lambda i, o: 9 * i * o + gn * o  # noqa: E731 - conv3x3 without bias + BatchNorm
    dec = conv_bn(h, 512)
    for i, o, s in zip((512, 256, 128, 64), (256, 128, 64, 16), (512, 256, 64, 0)):
        dec += conv_bn(i + s, o) + conv_bn(o, o)
    return cnn + vit + dec + 9 * 16 * n_classes + n_classes


def test_paper_profile_matches_official_parameter_count():
    official = official_r50_vit_b16_params()
    assert abs(official - 105.28e6) < 0.01e6  # the commonly quoted 105.28 M
    task = Task(in_channels=1, num_classes=8, image_size=(224, 224), exclusive=True)
    method = TransUNetMethod(TransUNetMethod.profiles()["paper"], task)
    assert method.net.head.out_channels == 9
    assert abs(method.num_parameters() - official) / official < 0.01, (method.num_parameters(), official)


@pytest.mark.parametrize("size", [64, 224])
def test_output_shape(size):
    task = Task(in_channels=1, num_classes=3, image_size=(size, size))
    method = TransUNetMethod({**TINY, "image_size": size}, task).eval()
    with torch.inference_mode():
        out = method.predict(torch.randn(1, 1, size, size), TransUNetMethod.budgets("tiny")[0])
        assert method.net(torch.randn(1, 1, size, size)).shape == (1, 4, size, size)
    assert out.probs.shape == out.mask.shape == (1, 3, size, size)
    assert int(out.mask.sum(1).max()) <= 1


def test_other_input_size_resizes_positions_and_rejects_bad_sizes():
    net = TransUNet2D(2, 2, (64, 64), **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY.items()
                                         if k in ("width", "block_units", "gn_groups", "hidden_size", "mlp_dim",
                                                  "vit_layers", "num_heads", "head_channels", "decoder_channels")})
    assert net.eval()(torch.randn(2, 2, 96, 128)).shape == (2, 2, 96, 128)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 2, 72, 72))


def test_grey_to_rgb_and_cup_variant():
    task = Task(in_channels=1, num_classes=1, image_size=(64, 64))
    rgb = TransUNetMethod({**TINY, "grey_to_rgb": True}, task)
    assert rgb.net.cnn.root[0].in_channels == 3
    cup = TransUNetMethod({**TINY, "n_skip": 0}, task)  # R50-ViT-CUP: no skip connections
    assert cup.num_parameters() < TransUNetMethod(TINY, task).num_parameters()
    for method in (rgb, cup):
        assert method.net.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_pretrained_path_loads_and_rejects(tmp_path):
    task = Task(in_channels=1, num_classes=2, image_size=(64, 64))
    torch.manual_seed(1)
    source = TransUNetMethod(TINY, task)
    torch.save(source.state_dict(), tmp_path / "plugin.pt")
    torch.save({"state_dict": source.net.state_dict()}, tmp_path / "net.pth")
    for name in ("plugin.pt", "net.pth"):
        torch.manual_seed(2)
        loaded = TransUNetMethod({**TINY, "pretrained_path": str(tmp_path / name)}, task)
        for (k, a), b in zip(source.net.state_dict().items(), loaded.net.state_dict().values(), strict=True):
            assert torch.equal(a, b), f"{name}: {k}"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TransUNetMethod({**TINY, "pretrained_path": str(tmp_path / "missing.pt")}, task)
    with pytest.raises(ValueError, match="does not match"):
        TransUNetMethod({**TINY, "hidden_size": 32, "pretrained_path": str(tmp_path / "net.pth")}, task)


def test_transunet_learns_synthetic_discs():
    task = Task(in_channels=1, num_classes=1, image_size=(32, 32))  # 32 px keeps the shared CPU free
    torch.manual_seed(0)
    method = TransUNetMethod({**TINY, "image_size": 32}, task).train()
    batch = synthetic_batch(task, 8, seed=1)
    losses = [method.training_step(batch)["loss"]]
    while len(losses) < 40 and losses[-1] >= 0.5 * losses[0]:
        losses.append(method.training_step(batch)["loss"])
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow
def test_paper_model_forward_224():
    task = Task(in_channels=1, num_classes=8, image_size=(224, 224))
    method = TransUNetMethod(TransUNetMethod.profiles()["paper"], task).eval()
    with torch.inference_mode():
        assert method.net(torch.randn(1, 1, 224, 224)).shape == (1, 9, 224, 224)


def official_dice(probs: torch.Tensor, onehot: torch.Tensor, squared: bool) -> torch.Tensor:
    """Beckschen/TransUNet ``utils.DiceLoss`` (batch-wide per class, background included, smooth 1e-5,
    mean over classes) with its Σp² + Σt² denominator (``squared``), or the linear Σp + Σt one."""
    loss = 0.0
    for c in range(onehot.shape[1]):
        p, t = probs[:, c], onehot[:, c]
        den = (p * p).sum() + (t * t).sum() if squared else p.sum() + t.sum()
        loss = loss + 1 - (2 * (p * t).sum() + 1e-5) / (den + 1e-5)
    return loss / onehot.shape[1]


def test_loss_is_half_ce_half_batch_dice_with_background_as_the_card_says():
    """The card's claims about the shared trainer's loss: batch-wide Dice over background + classes
    with the official squared denominator, one sigmoid channel for binary tasks."""
    import torch.nn.functional as F

    task = Task(in_channels=1, num_classes=2, image_size=(32, 32))
    method = TransUNetMethod({**TINY, "image_size": 32}, task)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 3, 32, 32, generator=g)
    mask = synthetic_batch(task, 3, seed=1)["mask"]
    onehot = torch.cat([1 - mask.amax(1, keepdim=True), mask], 1)
    ce = F.cross_entropy(logits, onehot.argmax(1))
    ours = method.loss(logits, mask)
    torch.testing.assert_close(ours, 0.5 * ce + 0.5 * official_dice(logits.softmax(1), onehot, squared=True))
    linear = 0.5 * ce + 0.5 * official_dice(logits.softmax(1), onehot, squared=False)
    assert (ours - linear).abs() > 1e-3  # the denominator matters: this test tells the two apart
    binary = TransUNetMethod({**TINY, "image_size": 32}, Task(in_channels=1, num_classes=1, image_size=(32, 32)))
    assert binary.out_channels(binary.task) == 1 and not binary.softmax
