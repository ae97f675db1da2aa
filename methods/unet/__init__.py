"""UNet baseline (MONAI BasicUNet), trained like TransUNet: 0.5 CE + 0.5 Dice, SGD with poly decay."""

from segarena.methods.unet.method import UNetMethod

__all__ = ["UNetMethod"]
