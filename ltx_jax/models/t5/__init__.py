"""T5 v1.1 XXL text encoder and its sentencepiece tokenizer."""

from ltx_jax.models.t5.config import T5Config
from ltx_jax.models.t5.loading import (COMPONENT, GGUF_IGNORE, GGUF_TABLE, HF_IGNORE, HF_TABLE,
                                       abstract_text_encoder, load_text_encoder, open_checkpoint)
from ltx_jax.models.t5.model import T5Encoder
from ltx_jax.models.t5.tokenizer import T5Tokenizer, load_tokenizer

__all__ = ['T5Config', 'T5Encoder', 'T5Tokenizer', 'COMPONENT', 'GGUF_IGNORE', 'GGUF_TABLE',
           'HF_IGNORE', 'HF_TABLE', 'abstract_text_encoder', 'load_text_encoder',
           'load_tokenizer', 'open_checkpoint']
