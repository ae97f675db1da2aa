"""cDAL (Hejrati et al., MICCAI 2024): few-step conditional diffusion GAN with spatial attention."""

from segarena.methods.cdal.method import CDALMethod

__all__ = ["CDALMethod"]
