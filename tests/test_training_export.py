"""Trained weights out: a LoRA saved in the diffusers / PEFT layout loads in diffusers
(`load_lora_weights`) and gives the transformer output ltx_jax gives with the trained adapter;
both layouts reload in ltx_jax with the trained factors bitwise; full fine-tunes round-trip
through an official single file and a converted orbax checkpoint bitwise."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from conftest import rel_l2
from ltx_jax import load_transformer
from ltx_jax.nn.lora import lora_layers
from ltx_jax.training import FullConfig, LoraConfig, TrainConfig, Trainer
from ltx_jax.training.export import save_full, save_lora
from ltx_jax.weights import open_safetensors
from test_training import TARGETS, config, model_dir  # noqa: F401  (fixture)

GRID = (2, 2, 3)


def perturbed(trainer, seed):
  """The trainer's initial state with every trainable value moved (B non-zero)."""
  state = trainer.init_state()
  rng = np.random.default_rng(seed)
  items = {tuple(p): v.replace(v.get_value() + jnp.asarray(
      rng.standard_normal(v.get_value().shape) * 0.05, v.get_value().dtype))
           for p, v in nnx.to_flat_state(state.params)}
  return state._replace(params=nnx.State.from_flat_path(items))


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  n = int(np.prod(GRID))
  mask = np.ones((2, 5), np.float32)
  mask[1, 3:] = 0
  return dict(x=rng.standard_normal((2, n, 8)).astype(np.float32),
              ctx=rng.standard_normal((2, 5, 24)).astype(np.float32),
              t=np.array([700.0, 30.0], np.float32), mask=mask)


def ours(model, d):
  return np.asarray(model(jnp.asarray(d['x']), jnp.asarray(d['ctx']), jnp.asarray(d['t']),
                          jnp.asarray(d['mask']), num_frames=GRID[0], height=GRID[1],
                          width=GRID[2], rope_interpolation_scale=jnp.array([8 / 25, 32, 32])))


def diffusers_output(model_dir, lora_file, d):
  from diffusers import LTXVideoTransformer3DModel
  from diffusers.loaders import LTXVideoLoraLoaderMixin

  class Holder(LTXVideoLoraLoaderMixin):  # the pipeline, as far as LoRA loading reads it
    hf_device_map = None
    components = {}

    def __init__(self, transformer):
      self.transformer = transformer

  holder = Holder(LTXVideoTransformer3DModel.from_pretrained(model_dir / 'transformer').eval())
  holder.load_lora_weights(str(lora_file), adapter_name='trained')
  with torch.no_grad():
    return holder.transformer(
        hidden_states=torch.from_numpy(d['x']), encoder_hidden_states=torch.from_numpy(d['ctx']),
        timestep=torch.from_numpy(d['t']), encoder_attention_mask=torch.from_numpy(d['mask']),
        num_frames=GRID[0], height=GRID[1], width=GRID[2],
        rope_interpolation_scale=[8 / 25, 32, 32], return_dict=False)[0].numpy()


@pytest.mark.slow
@pytest.mark.parametrize('alpha,rslora', [(4.0, False), (8.0, True)])
def test_lora_loads_in_diffusers_and_back(model_dir, tmp_path, alpha, rslora,  # noqa: F811
                                          highest_precision):
  trainer = Trainer(load_transformer(model_dir), TrainConfig(
      LoraConfig(rank=4, alpha=alpha, rslora=rslora, targets=TARGETS)))
  state = perturbed(trainer, 1)
  trained = trainer.model_with(state)
  d = inputs()
  want = ours(trained, d)
  path = save_lora(trainer, state, tmp_path / 'adapter.safetensors')
  meta = json.loads(open_safetensors(path).metadata['lora_adapter_metadata'])
  assert meta['transformer.r'] == 4 and meta['transformer.lora_alpha'] == alpha
  err = rel_l2(diffusers_output(model_dir, path, d), want)
  assert err <= 1e-5, err
  assert rel_l2(want, ours(load_transformer(model_dir), d)) > 1e-3  # the adapter matters
  flat = {tuple(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state.params)}
  for layout in ('diffusers', 'comfyui'):
    f = save_lora(trainer, state, tmp_path / f'{layout}.safetensors', layout=layout)
    loaded = load_transformer(model_dir, loras=[f], lora_mode='runtime')
    factor = trainer.selection.lora.factor
    for path_, var in nnx.iter_graph(loaded):
      if not isinstance(var, type(lora_layers(loaded)[0])):
        continue
      a = np.asarray(var.a.get_value())
      b = np.asarray(var.b.get_value())
      np.testing.assert_array_equal(a, flat[tuple(path_) + ('a',)])
      if factor == 1:
        np.testing.assert_array_equal(b, flat[tuple(path_) + ('b',)])  # bitwise
      else:  # the loader folds alpha / r into b
        np.testing.assert_allclose(b, flat[tuple(path_) + ('b',)] * factor, rtol=1e-6)
    got = ours(loaded, d)
    print(layout, alpha, rslora, 'diffusers err', err, 'reload err', rel_l2(got, want))
    assert rel_l2(got, want) <= 1e-6


@pytest.mark.slow
def test_full_fine_tune_round_trips(model_dir, tmp_path):  # noqa: F811
  from builders import official_transformer_config
  trainer = Trainer(load_transformer(model_dir), TrainConfig(FullConfig()))
  state = perturbed(trainer, 2)
  trained = trainer.model_with(state)
  want = {tuple(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(trained))}
  c = config()
  official = official_transformer_config(heads=c['num_attention_heads'],
                                         head_dim=c['attention_head_dim'],
                                         layers=c['num_layers'], caption_channels=24)
  metadata = {'config': json.dumps({'transformer': official}), 'note': 'kept'}
  path = save_full(trainer, state, tmp_path / 'full.safetensors', metadata=metadata)
  assert open_safetensors(path).metadata['note'] == 'kept'
  for source in (path, save_full(trainer, state, tmp_path / 'converted', layout='orbax')):
    loaded = load_transformer(source)
    got = {tuple(p): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(loaded))}
    assert got.keys() == want.keys()
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=str(k))
