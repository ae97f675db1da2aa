"""UNet baseline: the shared conformance checks plus a learning check."""

from segarena.methods.unet import UNetMethod
from segarena.platform.conformance import MethodConformance, synthetic_batch
from segarena.platform.plugin import Task


class TestUNetConformance(MethodConformance):
    method_cls = UNetMethod


def test_unet_multiclass_exclusive_masks_do_not_overlap():
    task = Task(in_channels=1, num_classes=3, image_size=(32, 32))
    method = UNetMethod(UNetMethod.profiles()["tiny"], task).eval()
    out = method.predict(synthetic_batch(task, 2)["image"], UNetMethod.budgets("tiny")[0])
    assert out.mask.shape == (2, 3, 32, 32)
    assert int(out.mask.sum(1).max()) <= 1


def test_unet_learns_synthetic_discs():
    task = Task(in_channels=1, num_classes=1, image_size=(64, 64))
    method = UNetMethod(UNetMethod.profiles()["tiny"], task).train()
    batch = synthetic_batch(task, 8, seed=1)
    losses = [method.training_step(batch)["loss"] for _ in range(60)]
    assert min(losses[-5:]) < 0.5 * losses[0], losses[::10]
