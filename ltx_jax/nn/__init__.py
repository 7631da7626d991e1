"""Building blocks shared by the LTX-Video transformer, the VAE and T5."""

from ltx_jax.nn.attention import attention, attention_implementations, register_attention
from ltx_jax.nn.embeddings import timestep_sinusoid
from ltx_jax.nn.layers import (FP8_COMPILER_OPTIONS, MATMULS, Dense, RMSNorm, compiler_options,
                               fp8_matmul, param, set_matmul, stacked)
from ltx_jax.nn.lora import LowRank, lora_scales, set_lora_scales
from ltx_jax.nn.norms import layer_norm, rms_norm
