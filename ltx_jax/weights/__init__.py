"""Reading PyTorch checkpoints (safetensors, GGUF) into abstract NNX models, strictly and lazily."""

from ltx_jax.weights.loader import LoadError, Source, load_params, plan_from_table
from ltx_jax.weights.safetensors_io import (CheckpointFormatError, SafetensorsReader,
                                            official_config, open_safetensors,
                                            write_safetensors)
