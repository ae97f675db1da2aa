"""SDSeg (Lin et al., MICCAI 2024): latent diffusion on masks with a single-step reverse process."""

from segarena.methods.sdseg.method import SDSegMethod

__all__ = ["SDSegMethod"]
