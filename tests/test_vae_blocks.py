"""Every block list the official `CausalVideoAutoencoder` accepts builds exactly its shapes.

Block types x parameters (residual, multiplier 1 / 2, num_layers, inject_noise, the int shorthand)
are enumerated for the encoder and the decoder; the official model is built on torch's meta
device (shapes only) and its state dict compared, through the official name table, with our
abstract model's parameters (`check_plan`: no missing, unexpected or wrong-shape tensor).
"""

import itertools
import json

import pytest
import torch

from ltx_jax.errors import DataError
from ltx_jax.models.vae import VAEConfig
from ltx_jax.models.vae.loading import (OFFICIAL_IGNORE, OFFICIAL_RENAMES, abstract_vae,
                                        make_plan, official_table)
from ltx_jax.weights.loader import check_plan

ENCODER_NAMES = ('res_x', 'res_x_y', 'compress_time', 'compress_space', 'compress_all',
                 'compress_all_x_y', 'compress_time_res', 'compress_space_res', 'compress_all_res')
DECODER_NAMES = ('res_x', 'res_x_y', 'compress_time', 'compress_space', 'compress_all')
PARAMS = [1, 2,  # the int shorthand: num_layers
          {}, {'num_layers': 2}, {'num_layers': 1, 'inject_noise': True},
          {'multiplier': 1}, {'multiplier': 2}, {'multiplier': 2, 'residual': True},
          {'multiplier': 1, 'residual': True}, {'residual': True},
          {'multiplier': 2, 'residual': True, 'inject_noise': True, 'num_layers': 2}]


class ShapeStore:
  def __init__(self, shapes):
    self.shapes = shapes

  def keys(self):
    return list(self.shapes)

  def shape(self, name):
    return self.shapes[name]

  def read(self, name, dtype=None):
    raise AssertionError('shapes only')


def official_shapes(cfg: dict) -> dict:
  from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
  with torch.device('meta'):
    vae = CausalVideoAutoencoder.from_config(json.loads(json.dumps(cfg)))
  return {k: tuple(v.shape) for k, v in vae.state_dict().items()}


def config(encoder, decoder, timestep=False) -> dict:
  return dict(_class_name='CausalVideoAutoencoder', dims=3, in_channels=3, out_channels=3,
              latent_channels=8, norm_layer='pixel_norm', latent_log_var='uniform',
              use_quant_conv=False, patch_size=2, encoder_base_channels=4,
              decoder_base_channels=4, timestep_conditioning=timestep,
              encoder_blocks=encoder, decoder_blocks=decoder)


def assert_same_shapes(cfg: dict) -> None:
  ours = VAEConfig.from_official(cfg)
  model = abstract_vae(ours)
  plan = make_plan(model, official_table(ours), OFFICIAL_RENAMES)
  shapes = official_shapes(cfg)
  # statistics the official files carry (the class leaves them out of its state dict)
  shapes['per_channel_statistics.mean-of-means'] = (cfg['latent_channels'],)
  shapes['per_channel_statistics.std-of-means'] = (cfg['latent_channels'],)
  check_plan(model, ShapeStore(shapes), plan, what=json.dumps(cfg['decoder_blocks']),
             ignore=OFFICIAL_IGNORE)


def _valid(name, params, side):
  """The official class needs num_layers on res_x given as a dict."""
  return not (name == 'res_x' and isinstance(params, dict) and 'num_layers' not in params)


ENCODER_CASES = [(n, p) for n, p in itertools.product(ENCODER_NAMES, PARAMS)
                 if _valid(n, p, 'encoder')]
DECODER_CASES = [(n, p) for n, p in itertools.product(DECODER_NAMES, PARAMS)
                 if _valid(n, p, 'decoder')]


@pytest.mark.parametrize('name,params', ENCODER_CASES, ids=str)
def test_encoder_block(name, params):
  cfg = config([['res_x', 1], [name, params], ['res_x', 1]], [['res_x', 1]])
  if name == 'compress_all_res' and isinstance(params, dict) and params.get('multiplier') == 1:
    # 4 -> 4 channels through a 2x2x2 space-to-depth: the official class builds a conv with
    # 4 // 8 = 0 output channels, which cannot run; refused with the block named
    with pytest.raises(DataError, match=r'encoder_blocks\[1\] compress_all_res'):
      VAEConfig.from_official(cfg)
    return
  assert_same_shapes(cfg)


@pytest.mark.parametrize('timestep', [False, True])
@pytest.mark.parametrize('name,params', DECODER_CASES, ids=str)
def test_decoder_block(name, params, timestep):
  assert_same_shapes(config([['res_x', 1]],
                            [['res_x', {'num_layers': 1, 'inject_noise': True}], [name, params],
                             ['res_x', 1]], timestep))


def test_decoder_multipliers_compose():
  """Several channel-changing decoder blocks, the 0.9.1-style residual list among them."""
  assert_same_shapes(config(
      [['res_x', 1], ['compress_all_res', {'multiplier': 2}], ['res_x_y', 1]],
      [['res_x', 1], ['compress_time', {'multiplier': 2, 'residual': True}],
       ['compress_all', {'residual': True, 'multiplier': 2}], ['res_x_y', {'multiplier': 2}],
       ['compress_space', {'multiplier': 2}], ['res_x', 2]], True))
