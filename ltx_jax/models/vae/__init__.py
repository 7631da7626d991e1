"""The LTX-Video causal video VAE (channels-last: video [B, F, H, W, 3], latents [B, F', H', W', C])."""

from ltx_jax.models.vae.blocks import Block, parse_blocks
from ltx_jax.models.vae.config import LTXV_VAE_090, LTXV_VAE_098, VAEConfig
from ltx_jax.models.vae.loading import (COMPONENT, DIFFUSERS_RENAMES, OFFICIAL_IGNORE,
                                        OFFICIAL_RENAMES, abstract_vae, diffusers_table, load_vae,
                                        official_table, open_checkpoint)
from ltx_jax.models.vae.model import Decoder, Encoder, VideoAutoencoder, init_vae
from ltx_jax.models.vae.tiling import TilingConfig

__all__ = ['Block', 'parse_blocks', 'LTXV_VAE_090', 'LTXV_VAE_098', 'VAEConfig', 'COMPONENT',
           'DIFFUSERS_RENAMES', 'OFFICIAL_IGNORE', 'OFFICIAL_RENAMES', 'abstract_vae',
           'diffusers_table', 'load_vae', 'official_table', 'open_checkpoint', 'Decoder',
           'Encoder', 'VideoAutoencoder', 'init_vae', 'TilingConfig']
