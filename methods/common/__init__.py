"""Helpers shared by the diffusion methods (mask scaling, ensemble fusion)."""
