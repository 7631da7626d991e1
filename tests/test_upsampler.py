"""Latent upsampler parity with the official `LatentUpsampler` and diffusers' `LTXLatentUpsamplerModel`
(tiny random models written as an official file and as a diffusers folder, read by our loader),
strict loading, config validation, and the multi-scale latent operations."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors.torch import save_file

from conftest import randomize_torch_module, rel_l2
from ltx_jax import (CheckpointFormatError, LatentUpsampler, LoadError, SourceError,
                     UpsamplerConfig, UsageError, load_latent_upsampler)
from ltx_jax.sampling.latent_ops import adain_filter_latent, first_pass_size, tone_map_latents

TOL = 1e-5
# Tiny configs: channels not a multiple of the official 128, mid a multiple of 32 (GroupNorm(32)).
CONFIGS = {
    'spatial_2d': dict(in_channels=8, mid_channels=32, num_blocks_per_stage=1, dims=2,
                       spatial_upsample=True, temporal_upsample=False),
    'spatial_3d': dict(in_channels=8, mid_channels=32, num_blocks_per_stage=2, dims=3,
                       spatial_upsample=True, temporal_upsample=False),
    'temporal': dict(in_channels=12, mid_channels=64, num_blocks_per_stage=1, dims=3,
                     spatial_upsample=False, temporal_upsample=True),
    'spatial_temporal': dict(in_channels=8, mid_channels=32, num_blocks_per_stage=2, dims=3,
                             spatial_upsample=True, temporal_upsample=True),
}


_apply = jax.jit(lambda model, x: model(x))  # one compile per config and input shape


def official_model(cfg, seed=0):
  from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
  model = LatentUpsampler(**cfg).eval()
  randomize_torch_module(model, seed=seed)
  return model


def write_official(path, model, cfg):
  """As the released files: the state dict without a prefix, flat JSON config in metadata."""
  save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path),
            metadata={'config': json.dumps(cfg)})


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def written(request, tmp_path_factory):
  from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel
  from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
  cfg = CONFIGS[request.param]
  tmp = tmp_path_factory.mktemp(request.param)
  write_official(tmp / 'ltxv-spatial-upscaler-tiny.safetensors', official_model(cfg, seed=3), cfg)
  official = LatentUpsampler.from_pretrained(tmp / 'ltxv-spatial-upscaler-tiny.safetensors').eval()
  diffusers_model = LTXLatentUpsamplerModel(**cfg).eval()
  diffusers_model.load_state_dict(official.state_dict())
  diffusers_model.save_pretrained(tmp / 'repo' / 'latent_upsampler')
  return request.param, cfg, tmp, official, diffusers_model


@pytest.mark.parametrize('frames', [1, 3])
def test_parity(written, frames, highest_precision):
  name, cfg, tmp, official, diffusers_model = written
  x = torch.randn(2, cfg['in_channels'], frames, 4, 6, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    want_official = official(x).numpy()
    want_diffusers = diffusers_model(x).numpy()
  ours_x = jnp.asarray(x.numpy().transpose(0, 2, 3, 4, 1))  # [B, F, H, W, C]
  for source, want in ((tmp / 'ltxv-spatial-upscaler-tiny.safetensors', want_official),
                       (tmp / 'repo', want_diffusers),
                       (tmp / 'repo' / 'latent_upsampler', want_diffusers)):
    model = load_latent_upsampler(source)
    got = np.asarray(_apply(model, ours_x)).transpose(0, 4, 1, 2, 3)
    assert got.shape == want.shape, (name, source)
    assert got.shape[2:] == (
        (2 * frames - 1 if cfg['temporal_upsample'] else frames),
        *(2 * s if cfg['spatial_upsample'] else s for s in (4, 6)))
    assert rel_l2(got, want) < TOL, (name, source, rel_l2(got, want))
  assert model.config.output_shape(frames, 4, 6) == want.shape[2:]
  # Stored in bf16, computed in f32: within bf16 rounding of the reference.
  model = load_latent_upsampler(tmp / 'ltxv-spatial-upscaler-tiny.safetensors',
                                param_dtype=jnp.bfloat16)
  assert model.initial_conv.kernel[...].dtype == jnp.bfloat16
  got = np.asarray(_apply(model, ours_x)).transpose(0, 4, 1, 2, 3)
  assert rel_l2(got, want_official) < 3e-2


def test_official_defaults_are_the_reference_ones():
  """Absent keys: the official from_config falls back to 4 / 128 / dims 2, diffusers to 128 / 512 /
  dims 3."""
  from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel
  from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler
  fields = ('in_channels', 'mid_channels', 'num_blocks_per_stage', 'dims', 'spatial_upsample',
            'temporal_upsample')
  with torch.device('meta'):
    ref_official = LatentUpsampler.from_config({})
    ref_diffusers = LTXLatentUpsamplerModel()
  assert UpsamplerConfig.from_official({}) == UpsamplerConfig(
      **{f: getattr(ref_official, f) for f in fields})
  assert UpsamplerConfig.from_diffusers({'_class_name': 'LTXLatentUpsamplerModel'}) == \
      UpsamplerConfig(**{f: ref_diffusers.config[f] for f in fields})
  released = {'in_channels': 128, 'mid_channels': 512, 'num_blocks_per_stage': 4, 'dims': 3,
              'spatial_upsample': True, 'temporal_upsample': False, '_class_name': 'LatentUpsampler'}
  assert UpsamplerConfig.from_official(json.dumps(released)) == UpsamplerConfig()
  # LTX-2's class without its rational resampler is this layer.
  assert UpsamplerConfig.from_diffusers(dict(released, use_rational_resampler=False,
                                             rational_spatial_scale=2.0)) == UpsamplerConfig()


def test_released_shapes_without_memory():
  """The released spatial (3-D) and temporal files: 72 tensors with the shapes REFERENCE.md lists."""
  from ltx_jax.models.upsampler import abstract_upsampler
  from ltx_jax.weights.loader import plan_from_table
  from ltx_jax.models.upsampler.loading import TABLE
  for cfg, up_shape in ((UpsamplerConfig(), (3, 3, 512, 2048)),
                        (UpsamplerConfig(spatial_upsample=False, temporal_upsample=True),
                         (3, 3, 3, 512, 1024))):
    model = abstract_upsampler(cfg)
    assert len(plan_from_table(model, TABLE)) == 72
    assert model.upsampler.kernel.get_value().shape == up_shape
    out = jax.eval_shape(lambda x: LatentUpsampler(cfg, rngs=nnx.Rngs(0))(x),
                         jax.ShapeDtypeStruct((1, 16, 16, 24, 128), jnp.float32))
    assert out.shape == (1,) + cfg.output_shape(16, 16, 24) + (128,)


def test_strict_loading(tmp_path):
  cfg = CONFIGS['spatial_3d']
  sd = {k: v.contiguous() for k, v in official_model(cfg).state_dict().items()}
  meta = {'config': json.dumps(cfg)}
  missing = dict(sd)
  del missing['res_blocks.1.norm2.bias']
  save_file(missing, str(tmp_path / 'missing.safetensors'), metadata=meta)
  with pytest.raises(LoadError, match=r'(?s)1 missing.*res_blocks\.1\.norm2\.bias'):
    load_latent_upsampler(tmp_path / 'missing.safetensors')
  wrong = dict(sd, **{'upsampler.0.weight': torch.zeros(64, 32, 3, 3)})
  save_file(wrong, str(tmp_path / 'wrong.safetensors'), metadata=meta)
  with pytest.raises(LoadError, match=r'wrong shape: upsampler\.0\.weight: file \(64, 32, 3, 3\)'):
    load_latent_upsampler(tmp_path / 'wrong.safetensors')
  extra = dict(sd, **{'extra.weight': torch.zeros(3)})
  save_file(extra, str(tmp_path / 'extra.safetensors'), metadata=meta)
  with pytest.raises(LoadError, match=r'unexpected: extra\.weight'):
    load_latent_upsampler(tmp_path / 'extra.safetensors')
  # A 3-D file read with a 2-D config: every conv kernel is mis-shaped.
  save_file(sd, str(tmp_path / 'dims.safetensors'), metadata={'config': json.dumps(dict(cfg, dims=2))})
  with pytest.raises(LoadError, match=r'wrong shape: initial_conv\.weight'):
    load_latent_upsampler(tmp_path / 'dims.safetensors')


@pytest.mark.parametrize('key,value,match', [
    ('num_blocks_per_stage', -1, r'num_blocks_per_stage=-1 \(an integer >= 0\)'),
    ('dims', '3', r"dims='3' \(2 or 3\)"),
    ('dims', 1, r'dims=1 \(2 or 3\)'),
    ('mid_channels', 48, r'mid_channels=48 \(a multiple of 32'),
    ('in_channels', 8.0, r'in_channels=8\.0 \(an integer >= 1\)'),
    ('spatial_upsample', 'yes', r"spatial_upsample='yes' \(true or false\)"),
    ('temporal_upsample', True, r'temporal_upsample=true with dims=2'),
    ('use_rational_resampler', True, r"use_rational_resampler=True \(LTX-2's rational resampler"),
])
def test_bad_config_values(tmp_path, key, value, match):
  cfg = dict(CONFIGS['spatial_2d'], **{key: value})
  sd = {k: v.contiguous() for k, v in official_model(CONFIGS['spatial_2d']).state_dict().items()}
  save_file(sd, str(tmp_path / 'up.safetensors'), metadata={'config': json.dumps(cfg)})
  with pytest.raises(CheckpointFormatError, match=match) as e:
    load_latent_upsampler(tmp_path / 'up.safetensors')
  assert '\n' not in str(e.value) and 'up.safetensors' in str(e.value)
  folder = tmp_path / 'latent_upsampler'
  folder.mkdir()
  (folder / 'config.json').write_text(json.dumps(dict(cfg, _class_name='LTXLatentUpsamplerModel')))
  save_file(sd, str(folder / 'diffusion_pytorch_model.safetensors'))
  with pytest.raises(CheckpointFormatError, match=match) as e:
    load_latent_upsampler(tmp_path)
  assert '\n' not in str(e.value) and 'config.json' in str(e.value)
  if key in CONFIGS['spatial_2d']:
    with pytest.raises(UsageError, match=key):
      UpsamplerConfig(**cfg)


def test_not_an_upsampler(tmp_path):
  save_file({'x': torch.zeros(2)}, str(tmp_path / 'ltxv.safetensors'),
            metadata={'config': json.dumps({'transformer': {}, 'vae': {}})})
  with pytest.raises(CheckpointFormatError, match='not a latent upsampler file'):
    load_latent_upsampler(tmp_path / 'ltxv.safetensors')
  save_file({'x': torch.zeros(2)}, str(tmp_path / 'plain.safetensors'))
  with pytest.raises(CheckpointFormatError, match="no 'config' metadata"):
    load_latent_upsampler(tmp_path / 'plain.safetensors')
  with pytest.raises(SourceError, match='no LTXLatentUpsamplerModel config.json'):
    load_latent_upsampler(tmp_path)
  with pytest.raises(SourceError, match='no such file'):
    load_latent_upsampler(tmp_path / 'nowhere.safetensors')
  model = LatentUpsampler(UpsamplerConfig(**CONFIGS['spatial_2d']), rngs=nnx.Rngs(0))
  with pytest.raises(UsageError, match=r'takes \[B, F, H, W, 8\]'):
    model(jnp.zeros((1, 1, 2, 2, 4)))


# ---------------------------------------------------------------------------- latent ops


@pytest.mark.parametrize('factor', [1.0, 0.25, -0.5])
def test_adain_filter_latent(factor):
  from diffusers import LTXLatentUpsamplePipeline
  from ltx_video.pipelines.pipeline_ltx_video import adain_filter_latent as official
  g = torch.Generator().manual_seed(4)
  latents = torch.randn(2, 6, 3, 8, 10, generator=g) * 2 + 0.5
  reference = torch.randn(2, 6, 3, 4, 5, generator=g) * 0.7 - 0.3
  want = official(latents, reference, factor).numpy()
  want_diffusers = LTXLatentUpsamplePipeline.adain_filter_latent(
      None, latents, reference, factor).numpy()
  got = adain_filter_latent(jnp.asarray(latents.numpy().transpose(0, 2, 3, 4, 1)),
                            jnp.asarray(reference.numpy().transpose(0, 2, 3, 4, 1)), factor)
  got = np.asarray(got).transpose(0, 4, 1, 2, 3)
  assert rel_l2(got, want) < 1e-6 and rel_l2(got, want_diffusers) < 1e-6
  with pytest.raises(UsageError, match='must agree in batch and channels'):
    adain_filter_latent(jnp.zeros((1, 2, 2, 2, 4)), jnp.zeros((1, 2, 2, 2, 3)))


@pytest.mark.parametrize('compression', [0.0, 0.6, 1.0])
def test_tone_map_latents(compression):
  from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
  latents = torch.randn(2, 6, 3, 4, 5, generator=torch.Generator().manual_seed(5)) * 3
  want = LTXVideoPipeline.tone_map_latents(latents, compression).numpy()
  got = tone_map_latents(jnp.asarray(latents.numpy().transpose(0, 2, 3, 4, 1)), compression)
  assert rel_l2(np.asarray(got).transpose(0, 4, 1, 2, 3), want) < 1e-6
  with pytest.raises(UsageError, match=r'1\.5 is outside \[0, 1\]'):
    tone_map_latents(jnp.zeros((1, 1, 1, 1, 1)), 1.5)


class _FirstPassSize(Exception):
  pass


def test_first_pass_size():
  """Against the official LTXMultiScalePipeline: a stand-in video pipeline records the first
  pass's width and height and stops."""
  from ltx_video.pipelines.pipeline_ltx_video import LTXMultiScalePipeline

  class Recorder:
    vae = None
    vae_scale_factor = 32

    def __call__(self, **kwargs):
      raise _FirstPassSize(kwargs['height'], kwargs['width'])

  multi = LTXMultiScalePipeline(Recorder(), latent_upsampler=None)
  for height, width, factor in ((512, 768, 2 / 3), (480, 704, 0.6666666), (720, 1280, 0.5),
                                (1216, 704, 2 / 3), (96, 160, 0.9)):
    with pytest.raises(_FirstPassSize) as e:
      multi(factor, {}, {}, height=height, width=width, output_type='pt')
    assert first_pass_size(height, width, factor) == e.value.args, (height, width, factor)
  with pytest.raises(UsageError, match='width 40 x downscale_factor 0.5 is below 32'):
    first_pass_size(64, 40, 0.5)
