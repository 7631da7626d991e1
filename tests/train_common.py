"""Helpers shared by the training-command tests and their worker processes."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_train_config(name: str, arg: str | None = None):
  path = ROOT / 'configs' / 'train' / f'{name}.py'
  spec = importlib.util.spec_from_file_location(f'train_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def smoke_config(output_dir, dataset=None, *, steps=4, mode='lora', validation=0,
                 checkpoints=0):
  """The smoke recipe on a prepared dataset folder, quiet: no validation unless asked."""
  c = load_train_config('smoke', mode)
  c.output_dir = str(output_dir)
  if dataset is not None:
    c.data.preprocessed_data_root = str(dataset)
  c.optimization.steps = steps
  c.validation.interval = validation
  c.checkpoints.interval = checkpoints
  c.metrics.progress = False
  return c


def flat_params(state) -> dict:
  """The train state's trainable parameters and optimizer state as host arrays by path."""
  import jax
  import numpy as np
  from ltx_jax import sharding
  out = {}
  for name, tree in (('params', state.params), ('opt', state.opt_state)):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      key = name + jax.tree_util.keystr(path)
      out[key] = np.asarray(jax.device_get(sharding.gather(leaf)))
  return out
