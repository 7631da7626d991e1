"""The latent upsampler of the multi-scale recipe (channels-last: [B, F, H, W, C] -> [B, F', 2H, 2W, C])."""

from ltx_jax.models.upsampler.config import UpsamplerConfig
from ltx_jax.models.upsampler.loading import abstract_upsampler, load_latent_upsampler
from ltx_jax.models.upsampler.model import LatentUpsampler

__all__ = ['LatentUpsampler', 'UpsamplerConfig', 'abstract_upsampler', 'load_latent_upsampler']
