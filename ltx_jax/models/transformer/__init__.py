"""The LTX-Video transformer: config, modules, loading."""

from ltx_jax.models.transformer.config import LTXV_13B, LTXV_2B, PRESETS, TransformerConfig
from ltx_jax.models.transformer.model import STG_STRATEGIES, LTXVideoTransformer
from ltx_jax.models.transformer.loading import load_transformer
