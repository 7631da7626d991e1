"""Reading checkpoints (safetensors, GGUF, converted orbax) into abstract NNX models, strictly
and lazily, through one front door (`load_component`)."""

from ltx_jax.weights.component import Checkpoint, Component, load_component
from ltx_jax.weights.loader import LoadError, Source, load_params, plan_from_table
from ltx_jax.weights.precision import cast, parse
from ltx_jax.weights.safetensors_io import (CheckpointFormatError, SafetensorsReader,
                                            official_config, open_safetensors,
                                            write_safetensors)

__all__ = ['Checkpoint', 'Component', 'load_component', 'LoadError', 'Source', 'load_params',
           'plan_from_table', 'cast', 'parse', 'CheckpointFormatError', 'SafetensorsReader',
           'official_config', 'open_safetensors', 'write_safetensors']
