"""MedSegDiff (Wu et al., MIDL 2023): diffusion segmentation with dynamic conditional encoding and FF-Parser."""

from segarena.methods.medsegdiff.method import MedSegDiffMethod

__all__ = ["MedSegDiffMethod"]
