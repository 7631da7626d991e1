"""Model sources find the latent upsampler beside the model: a diffusers `latent_upsampler/`
folder, or an official `ltxv-spatial-upscaler-*.safetensors` beside the single file."""

import json

import pytest
import torch

from source_layouts import layouts
from test_upsampler import CONFIGS, official_model, write_official
from ltx_jax import load_latent_upsampler
from ltx_jax.sources import resolve_source
from ltx_jax.sources.resolve import _spatial_upscaler

CONFIG = CONFIGS['spatial_3d']


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  return layouts(tmp_path_factory.getbasetemp() / 'layouts')


def _linked_copy(src, dst):
  """`dst` holding symlinks to everything in `src` (the shared layouts stay untouched)."""
  dst.mkdir()
  for p in src.iterdir():
    (dst / p.name).symlink_to(p)
  return dst


def test_diffusers_repo(folders, tmp_path):
  from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel
  repo = _linked_copy(folders['diffusers'], tmp_path / 'repo')
  assert resolve_source(repo, allow_custom=True).latent_upsampler is None
  # A latent_upsampler/ folder of another class is not taken for one.
  (repo / 'latent_upsampler').mkdir()
  (repo / 'latent_upsampler' / 'config.json').write_text(json.dumps({'_class_name': 'Other'}))
  assert resolve_source(repo, allow_custom=True).latent_upsampler is None
  model = LTXLatentUpsamplerModel(**CONFIG)
  model.save_pretrained(repo / 'latent_upsampler')
  ms = resolve_source(repo, allow_custom=True)
  assert ms.latent_upsampler == repo / 'latent_upsampler'
  names = {f.name for f in ms.files()}
  assert {'config.json', 'diffusion_pytorch_model.safetensors'} <= names
  assert (repo / 'latent_upsampler' / 'diffusion_pytorch_model.safetensors').resolve() in ms.files()
  assert load_latent_upsampler(ms.latent_upsampler).config.mid_channels == CONFIG['mid_channels']


def test_single_file(folders, tmp_path):
  single = _linked_copy(folders['single'], tmp_path / 'single')
  ms = resolve_source(single, allow_custom=True)
  assert ms.latent_upsampler is None and ms.transformer.name == 'ltxv-tiny.safetensors'
  model = official_model(CONFIG)
  for name in ('ltxv-spatial-upscaler-0.9.7.safetensors', 'ltxv-spatial-upscaler-0.9.8.safetensors'):
    write_official(single / name, model, CONFIG)
  write_official(single / 'ltxv-temporal-upscaler-0.9.7.safetensors',
                 official_model(CONFIGS['temporal']), CONFIGS['temporal'])
  for spec in (single, single / 'ltxv-tiny.safetensors'):
    ms = resolve_source(spec, allow_custom=True)  # the upscaler files are no second checkpoint
    assert ms.transformer.name == 'ltxv-tiny.safetensors'
    assert ms.latent_upsampler == single / 'ltxv-spatial-upscaler-0.9.8.safetensors'  # newest
    assert ms.latent_upsampler.resolve() in ms.files()
  assert load_latent_upsampler(ms.latent_upsampler).config.dims == 3
  # The release's own version first.
  assert _spatial_upscaler(single, '0.9.7').name == 'ltxv-spatial-upscaler-0.9.7.safetensors'
  assert _spatial_upscaler(single, '0.9.8').name == 'ltxv-spatial-upscaler-0.9.8.safetensors'
  assert _spatial_upscaler(tmp_path, '0.9.8') is None
