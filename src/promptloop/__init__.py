"""PromptLoop: plug-and-play prompt refinement via latent feedback for diffusion model alignment."""

__version__ = "0.1.0"
