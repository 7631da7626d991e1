"""ltx_jax: LTX-Video inference in JAX/XLA with Flax NNX."""

from ltx_jax.compilation_cache import configure_compilation_cache, enable_compilation_cache
from ltx_jax.errors import (CheckpointFormatError, DataError, LoadError, LTXError, ReleaseError,
                            SourceError, UsageError)
from ltx_jax.models.t5 import T5Config, T5Encoder, load_text_encoder, load_tokenizer
from ltx_jax.models.transformer import (LTXVideoTransformer, TransformerConfig, add_loras,
                                        load_transformer)
from ltx_jax.nn.lora import lora_scales, set_lora_scales
from ltx_jax.models.upsampler import LatentUpsampler, UpsamplerConfig, load_latent_upsampler
from ltx_jax.models.vae import VAEConfig, VideoAutoencoder, load_vae
from ltx_jax.pipeline import (Condition, GenerationPlan, LTXLongVideoOutput, LTXLongVideoPipeline,
                              LTXMultiScalePipeline, LTXPipeline, LTXPipelineOutput)
from ltx_jax.sampling.cache import FirstBlockCache, TeaCache
from ltx_jax import presets, video_io

from ltx_jax.version import __version__

__all__ = [
    '__version__',
    'LTXError', 'UsageError', 'DataError', 'SourceError', 'ReleaseError',
    'CheckpointFormatError', 'LoadError',
    'LTXPipeline', 'LTXMultiScalePipeline', 'LTXPipelineOutput', 'GenerationPlan', 'Condition',
    'presets', 'video_io', 'FirstBlockCache', 'TeaCache', 'LTXLongVideoPipeline',
    'LTXLongVideoOutput',
    'LTXVideoTransformer', 'TransformerConfig', 'load_transformer', 'add_loras',
    'set_lora_scales', 'lora_scales',
    'VAEConfig', 'VideoAutoencoder', 'load_vae',
    'LatentUpsampler', 'UpsamplerConfig', 'load_latent_upsampler',
    'T5Config', 'T5Encoder', 'load_text_encoder', 'load_tokenizer',
    'configure_compilation_cache', 'enable_compilation_cache',
]
