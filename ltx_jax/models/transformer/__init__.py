"""The LTX-Video transformer: config, modules, loading."""

from ltx_jax.models.transformer.config import LTXV_13B, LTXV_2B, PRESETS, TransformerConfig
from ltx_jax.models.transformer.loading import (COMPONENT, DIFFUSERS_TABLE, OFFICIAL_PREFIX,
                                                OFFICIAL_TABLE, abstract_transformer, add_loras,
                                                load_transformer, open_checkpoint)
from ltx_jax.models.transformer.model import STG_STRATEGIES, LTXVideoTransformer

__all__ = ['LTXV_13B', 'LTXV_2B', 'PRESETS', 'TransformerConfig', 'COMPONENT', 'DIFFUSERS_TABLE',
           'OFFICIAL_PREFIX', 'OFFICIAL_TABLE', 'abstract_transformer', 'add_loras', 'load_transformer',
           'open_checkpoint', 'STG_STRATEGIES', 'LTXVideoTransformer']
