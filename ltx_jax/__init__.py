"""ltx_jax: LTX-Video inference in JAX/XLA with Flax NNX."""

from ltx_jax.models.transformer import LTXVideoTransformer, TransformerConfig, load_transformer
