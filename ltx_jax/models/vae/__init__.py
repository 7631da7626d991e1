"""The LTX-Video causal video VAE (channels-last: video [B, F, H, W, 3], latents [B, F', H', W', C])."""

from ltx_jax.models.vae.config import (LTXV_VAE_090, LTXV_VAE_098, Block, VAEConfig, from_official,
                                       parse_blocks)
from ltx_jax.models.vae.diffusers_config import from_diffusers
from ltx_jax.models.vae.loading import abstract_vae, load_vae
from ltx_jax.models.vae.model import Decoder, Encoder, VideoAutoencoder, init_vae
from ltx_jax.models.vae.tiling import TilingConfig
