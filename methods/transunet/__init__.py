"""TransUNet baseline (R50-ViT-B/16 hybrid encoder + cascaded upsampler), trained from scratch like UNet."""

from segarena.methods.transunet.method import TransUNetMethod

__all__ = ["TransUNetMethod"]
