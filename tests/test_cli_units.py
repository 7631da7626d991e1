"""Config presets, their mapping onto LTXPipeline arguments, and image-to-video in process."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from ltx_jax.cli import config as config_lib
from ltx_jax.cli import presets, run, video_io
from ltx_jax.sampling import DISTILLED_0_9_8_FIRST_PASS

ROOT = Path(__file__).resolve().parents[1]
ALL_KWARGS = {'height', 'width', 'num_frames', 'frame_rate', 'decode_timestep',
              'decode_noise_scale', 'max_sequence_length', 'stochastic_sampling',
              'guidance_rescale', 'negative_prompt', 'timesteps', 'num_inference_steps',
              'guidance_timesteps', 'guidance_scale', 'stg_scale', 'stg_rescale',
              'skip_block_list', 'skip_layer_strategy', 'cfg_star_rescale'}


def load_config(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(name, ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


@pytest.mark.parametrize('preset', presets.names())
def test_every_preset_passes_the_checks(preset, tmp_path):
  c = load_config('t2v', preset)
  c.output_dir = str(tmp_path)
  assert c.preset == preset and c.model.file.endswith('.safetensors')
  plan = config_lib.check(c)
  assert plan.compression == (8, 32) and len(plan.jobs) == 1
  kw = run.pipeline_kwargs(c, ALL_KWARGS)
  assert ('timesteps' in kw) != ('num_inference_steps' in kw)
  if 'guidance_timesteps' in kw:
    n = len(kw['guidance_timesteps'])
    assert len(kw['guidance_scale']) == len(kw['skip_block_list']) == n


def test_default_is_the_2b_distilled_schedule():
  c = load_config('t2v')
  assert c.preset == 'ltxv-2b-0.9.8-distilled'
  assert c.model.file == 'ltxv-2b-0.9.8-distilled.safetensors'
  kw = run.pipeline_kwargs(c, ALL_KWARGS)
  np.testing.assert_allclose(kw['timesteps'], np.array(DISTILLED_0_9_8_FIRST_PASS) * 1000)
  assert kw['guidance_scale'] == 1.0 and kw['stg_scale'] == 0.0
  assert (kw['decode_timestep'], kw['decode_noise_scale']) == (0.05, 0.025)
  assert kw['max_sequence_length'] == 256 and kw['frame_rate'] == 30.0


def test_features_the_pipeline_lacks_are_refused_unless_off():
  c = load_config('t2v', 'ltxv-13b-0.9.8-dev')
  base = ALL_KWARGS - {'stg_scale', 'guidance_timesteps', 'cfg_star_rescale', 'stg_rescale',
                       'skip_block_list', 'skip_layer_strategy'}
  with pytest.raises(config_lib.UsageError, match='does not implement'):
    run.pipeline_kwargs(c, base)
  kw = run.pipeline_kwargs(load_config('t2v', 'ltxv-2b-0.9.8-distilled'), base)
  assert 'stg_scale' not in kw


def test_i2v_in_process(tmp_path):
  image = tmp_path / 'first.png'
  from PIL import Image
  Image.fromarray(np.tile(np.arange(96, dtype=np.uint8)[None, :, None], (64, 1, 3))).save(image)
  c = load_config('smoke', 'i2v')
  c.image = str(image)
  c.output_dir = str(tmp_path / 'out')
  c.progress = False
  (video,) = run.run(c)
  info = video_io.read_mp4_info(video)
  assert (info['frames'], info['width'], info['height']) == (9, 96, 64)
  meta = json.loads(video.with_suffix('.json').read_text())
  assert meta['image'] == str(image) and 'image_encoding' in meta['timings']['run']['seconds']
