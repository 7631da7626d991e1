"""Release presets (ltx_jax.presets): the CLI's configs and the README's table come from them,
and Python users can pass them to the pipeline."""

import re
from pathlib import Path

import pytest

from ltx_jax import presets, smoke
from ltx_jax.cli import config as config_lib
from ltx_jax.cli.config import pipeline_kwargs
from ltx_jax.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]


def test_readme_table_is_generated_from_the_presets():
  readme = (ROOT / 'README.md').read_text()
  found = re.search(r'<!-- presets:begin -->\n(.*?)<!-- presets:end -->', readme, re.S)
  assert found, 'README.md lacks the <!-- presets:begin --> / <!-- presets:end --> markers'
  assert found.group(1) == presets.markdown_table(), (
      'README.md preset table is stale; paste ltx_jax.presets.markdown_table() between the '
      'markers')


@pytest.mark.parametrize('name', presets.names())
def test_cli_config_is_the_library_preset(name):
  c = config_lib.base_config(name)
  assert (c.model.source, c.model.file) == (presets.HUB_REPO, presets.get(name).file)
  assert pipeline_kwargs(c) == presets.sampling(name)
  p = presets.get(name)
  assert c.multi_scale == (p.multi_scale is not None)
  if c.multi_scale:
    assert config_lib.multi_scale_kwargs(c) == presets.multi_scale(name)


def test_python_users_pass_a_preset_to_the_pipeline():
  pipe = smoke.build_pipeline()
  kw = presets.sampling(presets.DEFAULT, height=64, width=64, num_frames=9,
                        max_sequence_length=16, progress=False)
  # The single distilled pass runs to the end: its last step is at timestep 0.03.
  assert kw['timesteps'] == list(presets.DISTILLED_SINGLE_PASS) and kw['timesteps'][-1] <= 50
  assert kw['height'] == 64
  out = pipe(**kw, prompt='a cat sits on the mat')
  assert out.latents.shape == (1, 2, 2, 2, smoke.LATENT)
  assert out.frames.shape == (1, 9, 64, 64, 3)
  with pytest.raises(UsageError, match='heigth are no LTXPipeline.__call__ arguments'):
    presets.sampling(presets.DEFAULT, heigth=64)
  with pytest.raises(UsageError, match="unknown preset 'nope'; choose one of: ltxv-13b"):
    presets.sampling('nope')
  with pytest.raises(TypeError):
    presets.get(presets.DEFAULT).sampling['height'] = 1  # read-only: sampling() copies


# The official configs (Lightricks/LTX-Video configs/*.yaml at its last commit; the 0.9.7 files
# as they were before their removal), copied: timesteps on the 0..1 scale, official key names.
_YAML_DEV_13B = dict(
    first_pass=dict(guidance_scale=[1, 1, 6, 8, 6, 1, 1], stg_scale=[0, 0, 4, 4, 4, 2, 1],
                    rescaling_scale=[1, 1, 0.5, 0.5, 1, 1, 1],
                    guidance_timesteps=[1.0, 0.996, 0.9933, 0.9850, 0.9767, 0.9008, 0.6180],
                    skip_block_list=[[], [11, 25, 35, 39], [22, 35, 39], [28], [28], [28], [28]],
                    num_inference_steps=30, skip_final_inference_steps=3, cfg_star_rescale=True),
    second_pass=dict(guidance_scale=[1], stg_scale=[1], rescaling_scale=[1],
                     guidance_timesteps=[1.0], skip_block_list=[27], num_inference_steps=30,
                     skip_initial_inference_steps=17, cfg_star_rescale=True))
_YAML_DISTILLED = dict(
    first_pass=dict(timesteps=[1.0000, 0.9937, 0.9875, 0.9812, 0.9750, 0.9094, 0.7250],
                    guidance_scale=1, stg_scale=0, rescaling_scale=1, skip_block_list=[42]),
    second_pass=dict(timesteps=[0.9094, 0.7250, 0.4219], guidance_scale=1, stg_scale=0,
                     rescaling_scale=1, skip_block_list=[42]))
_YAML_COMMON = dict(stg_mode='attention_values', decode_timestep=0.05, decode_noise_scale=0.025)
_YAML_BASE = dict(guidance_scale=3, stg_scale=1, rescaling_scale=0.7, skip_block_list=[19],
                  num_inference_steps=40, stochastic_sampling=False)
OFFICIAL = {
    'ltxv-2b-0.9.0': ('ltx-video-2b-v0.9.safetensors', dict(_YAML_BASE)),
    'ltxv-2b-0.9.1': ('ltx-video-2b-v0.9.1.safetensors', dict(_YAML_BASE)),
    'ltxv-2b-0.9.5': ('ltx-video-2b-v0.9.5.safetensors', dict(_YAML_BASE)),
    'ltxv-2b-0.9.6-dev': ('ltxv-2b-0.9.6-dev-04-25.safetensors', dict(_YAML_BASE)),
    'ltxv-2b-0.9.6-distilled': ('ltxv-2b-0.9.6-distilled-04-25.safetensors', dict(
        guidance_scale=1, stg_scale=0, rescaling_scale=1, num_inference_steps=8,
        stochastic_sampling=True)),
}
for _v in ('0.9.7', '0.9.8'):
  for _fp8 in ('', '-fp8'):
    _up = f'ltxv-spatial-upscaler-{_v}.safetensors'
    OFFICIAL[f'ltxv-13b-{_v}-dev{_fp8}'] = (f'ltxv-13b-{_v}-dev{_fp8}.safetensors', dict(
        _YAML_DEV_13B, pipeline_type='multi-scale', downscale_factor=0.6666666,
        spatial_upscaler_model_path=_up, stochastic_sampling=False))
    _distilled = dict(_YAML_DISTILLED, pipeline_type='multi-scale', downscale_factor=0.6666666,
                      spatial_upscaler_model_path=_up, stochastic_sampling=False)
    if _v == '0.9.8':
      _distilled['second_pass'] = dict(_distilled['second_pass'], tone_map_compression_ratio=0.6)
    OFFICIAL[f'ltxv-13b-{_v}-distilled{_fp8}'] = (f'ltxv-13b-{_v}-distilled{_fp8}.safetensors',
                                                  _distilled)
for _fp8 in ('', '-fp8'):
  OFFICIAL[f'ltxv-2b-0.9.8-distilled{_fp8}'] = (
      f'ltxv-2b-0.9.8-distilled{_fp8}.safetensors',
      dict(_YAML_DISTILLED, pipeline_type='multi-scale', downscale_factor=0.6666666,
           spatial_upscaler_model_path='ltxv-spatial-upscaler-0.9.8.safetensors',
           stochastic_sampling=False))


def _ours(values: dict) -> dict:
  """Official pass / config values under our names and scale: timesteps x1000, rescaling_scale
  -> stg_rescale, lists as tuples; a skip_block_list with STG 0 perturbs nothing (dropped)."""
  out = {}
  for k, v in values.items():
    if k in ('timesteps', 'guidance_timesteps'):
      v = [round(1000 * t, 4) for t in v]
    k = 'stg_rescale' if k == 'rescaling_scale' else k
    out[k] = v
  stg = out.get('stg_scale', 0)
  if 'skip_block_list' in out and not any(x > 0 for x in (stg if isinstance(stg, list) else
                                                          [stg])):
    del out['skip_block_list']
  return out


def _listed(v):
  if isinstance(v, (tuple, list)):
    return [_listed(x) for x in v]
  return v


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_presets_are_the_official_yaml_values(name):
  assert sorted(OFFICIAL) == presets.names()
  file, yaml = OFFICIAL[name]
  p = presets.get(name)
  assert p.file == file
  s = presets.sampling(name)
  for k, v in _YAML_COMMON.items():
    assert s['skip_layer_strategy' if k == 'stg_mode' else k] == v, k
  assert s['stochastic_sampling'] == yaml['stochastic_sampling']
  if yaml.get('pipeline_type') != 'multi-scale':
    assert p.multi_scale is None and p.upsampler is None
    for k, v in _ours({k: v for k, v in yaml.items() if k != 'stochastic_sampling'}).items():
      assert _listed(s[k]) == v, k
    return
  assert p.upsampler == yaml['spatial_upscaler_model_path']
  assert p.multi_scale['downscale_factor'] == yaml['downscale_factor']
  kw = presets.multi_scale(name)
  for which in ('first_pass', 'second_pass'):
    want = _ours(yaml[which])
    got = {k: v for k, v in kw[which].items() if k != 'skip_block_list' or k in want}
    assert got == want, which
    assert not set(kw) & presets.PASS_KEYS  # the passes alone set schedule and guidance
  # Single-pass mode: a dev release's first pass at the full size run to the end; a distilled
  # one's single pass (diffusers' documented list), ending near 0.
  first = _ours(yaml['first_pass'])
  first.pop('skip_final_inference_steps', None)
  if 'distilled' in name:
    first['timesteps'] = list(presets.DISTILLED_SINGLE_PASS)
    assert s['timesteps'][-1] <= 50
  for k, v in first.items():
    assert _listed(s[k]) == v, k


def test_multi_scale_preset_runs():
  """A multi-scale preset drives LTXMultiScalePipeline (the smoke model and a random upsampler,
  at a small size)."""
  from flax import nnx
  from ltx_jax import LTXMultiScalePipeline
  from ltx_jax.models.upsampler import LatentUpsampler, UpsamplerConfig
  multi = LTXMultiScalePipeline(smoke.build_pipeline(), LatentUpsampler(
      UpsamplerConfig(in_channels=smoke.LATENT, mid_channels=32, num_blocks_per_stage=1),
      rngs=nnx.Rngs(0)))
  kw = presets.multi_scale(presets.DEFAULT, height=128, width=128, num_frames=9,
                           max_sequence_length=16, progress=False, output_type='latent')
  out = multi(**kw, prompt='a cat sits on the mat')
  assert out.latents.shape == (1, 2, 4, 4, smoke.LATENT)  # passes at 64 and 128
  with pytest.raises(UsageError, match="preset 'ltxv-2b-0.9.5' is single-pass"):
    presets.multi_scale('ltxv-2b-0.9.5')
  with pytest.raises(UsageError, match='heigth are no LTXPipeline'):
    presets.multi_scale(presets.DEFAULT, heigth=1)
